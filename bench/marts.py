"""Client-economics marts: the pipeline's polars transforms against a hand-written DuckDB SQL reference.

    uv run python bench/marts.py --transactions 10000000

Synthesises staged bank transactions, invoices (one per payment), CRM activities and tickets (vectorised, in
memory), then in the same process times
- ours: economics.settlement_parts + settlement_costs + time_costs + margin_rates -> client_month ->
  client_scorecard -> pareto, whale curve, audit and what-if (everything collected);
- reference: the same numbers (client_month money and costs with FIFO settlement via ASOF JOIN, the scorecard
  with ranks and ABC) in DuckDB SQL over the same Arrow data;
and reports wall time, the ratio ours / reference, peak RSS, and that both give the same totals.
Issue 5's target: ratio <= 1.5 and peak memory under 8 GB at 10M transactions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from transforms import behaviour, economics  # noqa: E402
from transforms import metrics as m  # noqa: E402
from transforms.marts import (  # noqa: E402
    client_month,
    client_scorecard,
    pareto_summary,
    phase_out_scenarios,
    unprofitable_audit,
    whale_curve,
)

AS_OF = dt.date(2026, 10, 31)
START = dt.date(2023, 11, 1)


def synthesise(n: int, seed: int = 1) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    clients = max(100, n // 40)
    days = (AS_OF - START).days + 1
    size = (rng.pareto(1.2, clients) + 1) * 100
    who = rng.choice(clients, n, p=size / size.sum())
    day = rng.integers(0, days, n)
    cents = np.maximum((size[who] * rng.lognormal(0, 0.5, n) * 100).astype(np.int64), 100)
    refund = rng.random(n) < 0.03
    ids = pl.Series("client_id", [f"C{i:07d}" for i in range(clients)])
    staged = pl.DataFrame({"_who": who, "_day": day, "_cents": np.where(refund, -cents // 10, cents),
                           "_refund": refund}).with_columns(
        client_id=pl.col("_who").map_batches(lambda s: ids.gather(s)),
        booking_date=pl.lit(START) + pl.duration(days=pl.col("_day")),
        amount_reporting=(pl.col("_cents").cast(pl.Decimal(18, 0)) / 100).cast(m.MONEY),
        category=pl.when(pl.col("_refund")).then(pl.lit("refund")).otherwise(pl.lit("client_payment")),
        status=pl.lit("BOOK"),
    ).drop("_who", "_day", "_cents", "_refund")
    payments = staged.filter(pl.col("category") == "client_payment")
    late = rng.integers(-10, 60, payments.height)
    invoices = payments.select(
        "client_id", pl.format("I{}", pl.int_range(pl.len())).alias("invoice_id"),
        (pl.col("booking_date") - pl.duration(days=pl.Series(late + 30))).alias("issue_date"),
        (pl.col("booking_date") - pl.duration(days=pl.Series(late))).alias("due_date"),
        pl.col("amount_reporting").alias("amount"),
        (pl.col("amount_reporting").cast(pl.Float64) * 0.7).round(2).cast(m.MONEY).alias("cost"),
        pl.lit("won").alias("status"),
    ).filter(pl.col("issue_date") <= AS_OF)
    k = n // 2
    activities = pl.DataFrame({"_who": rng.integers(0, clients, k), "_day": rng.integers(0, days, k),
                               "duration_minutes": rng.integers(5, 90, k).astype(np.float64),
                               "manager_id": [f"M{i:02d}" for i in rng.integers(0, 50, k)]}).with_columns(
        client_id=pl.col("_who").map_batches(lambda s: ids.gather(s)),
        started_at=(pl.lit(START) + pl.duration(days=pl.col("_day"))).cast(pl.Datetime("us")),
    ).drop("_who", "_day")
    t = n // 20
    tickets = pl.DataFrame({"_who": rng.integers(0, clients, t), "_day": rng.integers(0, days, t),
                            "minutes_spent": rng.integers(10, 240, t).astype(np.float64),
                            "manager_id": [f"M{i:02d}" for i in rng.integers(0, 50, t)]}).with_columns(
        client_id=pl.col("_who").map_batches(lambda s: ids.gather(s)),
        opened_at=pl.lit(START) + pl.duration(days=pl.col("_day")),
    ).drop("_who", "_day")
    managers = pl.DataFrame({"manager_id": [f"M{i:02d}" for i in range(50)],
                             "hourly_cost": [float(40 + i % 30) for i in range(50)]}).with_columns(
        pl.col("hourly_cost").cast(m.MONEY))
    dim = pl.DataFrame({"client_id": ids, "name": ids, "source": "crm", "industry": None,
                        "manager_id": None}).cast({"industry": pl.String, "manager_id": pl.String})
    return {"staged": staged, "invoices": invoices, "activities": activities, "tickets": tickets,
            "managers": managers, "clients": dim}


def ours(d: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    staged = d["staged"].lazy()
    payments = staged.filter(pl.col("category") == "client_payment")
    parts = economics.settlement_parts(d["invoices"].lazy(), payments, as_of=AS_OF).collect().lazy()
    settlement = economics.invoice_settlement(parts, as_of=AS_OF, write_off_days=180)
    costs = economics.time_costs(d["activities"].lazy(), d["tickets"].lazy(), d["managers"].lazy(), as_of=AS_OF,
                                 default_hourly_cost=50, support_hourly_cost=None)
    margins = economics.margin_rates(d["invoices"].lazy(), d["clients"].lazy(), default_margin=0.3,
                                     margin_by_industry={})
    months = client_month.build(staged, as_of=AS_OF, reporting_currency="EUR", costs=costs,
                                settlement_costs=economics.settlement_costs(
                                    parts, as_of=AS_OF, cost_of_capital=0.1, write_off_days=180),
                                margins=margins).collect()
    card = client_scorecard.build(months.lazy(), d["clients"].lazy(), settlement, as_of=AS_OF, window_months=12,
                                  reporting_currency="EUR").collect()
    audit = unprofitable_audit.build(card.lazy(), months.lazy(), as_of=AS_OF).collect()
    return {"client_month": months, "scorecard": card, "pareto": pareto_summary.build(card.lazy()).collect(),
            "whale": whale_curve.build(card.lazy()).collect(), "audit": audit,
            "scenarios": phase_out_scenarios.build(card.lazy(), months.lazy(), as_of=AS_OF, bottom=(5, 10)).collect()}


# client_month in DuckDB SQL over tables staged, invoices, activities, tickets, managers (as bound $as_of):
# the CTE chain ends with ``client_month``. bench/pipeline.py materialises it; REFERENCE_SQL continues it.
CLIENT_MONTH_CTES = """
WITH money AS (
    SELECT client_id, date_trunc('month', booking_date)::DATE AS month,
           coalesce(sum(amount_reporting) FILTER (WHERE category = 'client_payment'), 0) AS revenue,
           coalesce(-sum(amount_reporting) FILTER (WHERE category = 'refund'), 0) AS refunds
    FROM staged WHERE status = 'BOOK' AND booking_date <= $as_of GROUP BY ALL
), won AS (
    SELECT *, c_end - cents AS c_start FROM (
        SELECT client_id, due_date, (amount * 100)::BIGINT AS cents,
               sum((amount * 100)::BIGINT) OVER (PARTITION BY client_id ORDER BY due_date, issue_date, invoice_id) AS c_end
        FROM invoices WHERE status = 'won' AND issue_date <= $as_of AND amount > 0)
), paid AS (
    SELECT *, c_paid - cents AS c_before FROM (
        SELECT client_id, booking_date, sum((amount_reporting * 100)::BIGINT) AS cents,
               sum(sum((amount_reporting * 100)::BIGINT)) OVER (PARTITION BY client_id ORDER BY booking_date) AS c_paid
        FROM staged WHERE category = 'client_payment' AND status = 'BOOK' AND booking_date <= $as_of
        GROUP BY client_id, booking_date HAVING sum(amount_reporting) > 0)
), totals AS (SELECT client_id, max(c_paid) AS total_paid FROM paid GROUP BY ALL
), parts AS (  -- FIFO: the part of each invoice paid on each day (the overlap of their cumulative ranges)
    SELECT w.client_id, w.due_date, w.c_end - greatest(w.c_start, p.c_before) AS cents, p.booking_date AS paid_date
    FROM won w ASOF JOIN paid p ON w.client_id = p.client_id AND w.c_end <= p.c_paid  -- the day completing it
    UNION ALL
    SELECT w.client_id, w.due_date, p.c_paid - greatest(w.c_start, p.c_before), p.booking_date
    FROM paid p ASOF JOIN won w ON p.client_id = w.client_id AND p.c_paid <= w.c_end
    WHERE p.c_paid < w.c_end  -- a day ending inside an invoice
    UNION ALL
    SELECT w.client_id, w.due_date, w.c_end - greatest(w.c_start, coalesce(t.total_paid, 0)), NULL
    FROM won w LEFT JOIN totals t USING (client_id) WHERE coalesce(t.total_paid, 0) < w.c_end  -- still open
), part_late AS (
    SELECT client_id, due_date, cents, paid_date IS NULL AND due_date + 180 <= $as_of AS written_off,
           CASE WHEN paid_date IS NOT NULL THEN paid_date WHEN due_date + 180 <= $as_of THEN due_date + 180
                ELSE $as_of::DATE END AS last_late
    FROM parts
), settlement AS (  -- each part's cost accrues in the months it is late: cent-days x rate / 36500
    SELECT client_id, m.month,
           sum(cents * (least(last_late, last_day(m.month)) - greatest(due_date + 1, m.month) + 1)) * 0.1 / 36500
             AS collection_cost,
           0 AS bad_debt
    FROM (SELECT * FROM part_late WHERE last_late > due_date AND cents > 0) AS c,
         LATERAL (SELECT unnest(generate_series(date_trunc('month', c.due_date + 1)::TIMESTAMP,
                                                date_trunc('month', c.last_late)::TIMESTAMP,
                                                INTERVAL 1 MONTH))::DATE AS month) AS m
    GROUP BY ALL
    UNION ALL
    SELECT client_id, date_trunc('month', due_date + 180)::DATE, 0, sum(cents) / 100.0 FROM part_late
    WHERE written_off AND cents > 0 GROUP BY ALL
), time_cost AS (
    SELECT a.client_id, date_trunc('month', a.started_at)::DATE AS month,
           sum(a.duration_minutes / 60 * coalesce(mg.hourly_cost::DOUBLE, 50)) AS communication_cost, 0.0 AS support_cost,
           sum(a.duration_minutes) AS minutes
    FROM activities a LEFT JOIN managers mg USING (manager_id) WHERE a.started_at::DATE <= $as_of GROUP BY 1, 2
    UNION ALL
    SELECT t.client_id, date_trunc('month', t.opened_at)::DATE, 0.0,
           sum(t.minutes_spent / 60 * coalesce(mg.hourly_cost::DOUBLE, 50)), sum(t.minutes_spent)
    FROM tickets t LEFT JOIN managers mg USING (manager_id) WHERE t.opened_at <= $as_of GROUP BY 1, 2
), margin AS (
    SELECT client_id, (sum(amount - cost) / sum(amount))::DOUBLE AS rate FROM invoices
    WHERE status = 'won' AND cost IS NOT NULL AND amount > 0 GROUP BY ALL
), month_rows AS (
    SELECT client_id, month, sum(revenue) AS revenue, sum(refunds) AS refunds, sum(cc) AS communication_cost,
           sum(sc) AS support_cost, sum(col) AS collection_cost, sum(bd) AS bad_debt, sum(mins) / 60 AS hours
    FROM (
        SELECT client_id, month, revenue, refunds, 0 AS cc, 0 AS sc, 0 AS col, 0 AS bd, 0 AS mins FROM money
        UNION ALL SELECT client_id, month, 0, 0, communication_cost, support_cost, 0, 0, minutes FROM time_cost
        UNION ALL SELECT client_id, month, 0, 0, 0, 0, collection_cost, bad_debt, 0 FROM settlement
    ) GROUP BY ALL
), client_month AS (
    SELECT r.*, round((r.revenue - r.refunds) * coalesce(mg.rate, 0.3), 2) AS gross_margin,
           round((r.revenue - r.refunds) * coalesce(mg.rate, 0.3), 2) - round(communication_cost, 2)
             - round(support_cost, 2) - round(collection_cost, 2) - round(bad_debt, 2) AS net_profit,
           r.revenue - r.refunds AS net_revenue
    FROM month_rows r LEFT JOIN margin mg USING (client_id)
)"""

# the scorecard totals over a ``client_month`` relation (the CTE above, or a table of the same shape)
SCORECARD_CTES = """
card AS (
    SELECT client_id, sum(revenue - refunds) AS net_revenue, sum(net_profit) AS net_profit, sum(hours) AS hours
    FROM client_month WHERE month BETWEEN DATE '2025-11-01' AND DATE '2026-10-01' GROUP BY ALL
), ranked AS (
    SELECT *, row_number() OVER (ORDER BY net_revenue DESC, client_id) AS revenue_rank,
           (sum(greatest(net_revenue, 0)) OVER (ORDER BY net_revenue DESC, client_id) - greatest(net_revenue, 0))
             / sum(greatest(net_revenue, 0)) OVER () AS share_before
    FROM card
)
SELECT (SELECT sum(revenue) FROM client_month) AS total_revenue,
       (SELECT sum(net_profit) FROM client_month) AS total_profit,
       count(*) FILTER (WHERE net_revenue > 0 AND share_before < 0.8) AS clients_a,
       count(*) AS clients
FROM ranked
"""

REFERENCE_SQL = CLIENT_MONTH_CTES + ",\n" + SCORECARD_CTES


def reference(d: dict[str, pl.DataFrame]) -> tuple:
    con = duckdb.connect()
    for name in ("staged", "invoices", "activities", "tickets", "managers"):
        con.register(name, d[name].to_arrow())
    return con.execute(REFERENCE_SQL, {"as_of": AS_OF}).fetchone()


def ours_behaviour(d: dict[str, pl.DataFrame], months: pl.DataFrame) -> dict[str, pl.DataFrame]:
    payments = d["staged"].lazy().filter(pl.col("category") == "client_payment")
    first = behaviour.first_purchases(payments).collect().lazy()
    window = m.window_bounds(AS_OF, 12)
    return {
        "xyz": behaviour.xyz(months.lazy(), first, window=window).collect(),
        "cohorts": behaviour.cohorts(months.lazy(), first).collect(),
        "retention": behaviour.retention(payments, behaviour.periods(START, window[1]).filter(
            pl.col("period_type") == "month"), window_days=365).collect(),
    }


BEHAVIOUR_SQL = """
WITH pay AS (SELECT client_id, booking_date FROM staged WHERE category = 'client_payment' AND status = 'BOOK'),
first AS (SELECT client_id, min(booking_date) AS first_payment FROM pay GROUP BY client_id),
grid AS (
    SELECT f.client_id, g.month
    FROM first f, LATERAL (SELECT unnest(generate_series(greatest(date_trunc('month', f.first_payment)::DATE,
                                                                  DATE '2025-11-01'), DATE '2026-10-01',
                                                         INTERVAL 1 MONTH))::DATE AS month) g
    WHERE f.first_payment <= DATE '2026-10-31'
), xyz AS (
    SELECT g.client_id, count(*) AS months, avg(coalesce(cm.net_revenue::DOUBLE, 0)) AS mean,
           stddev_pop(coalesce(cm.net_revenue::DOUBLE, 0)) AS sd
    FROM grid g LEFT JOIN client_month cm ON cm.client_id = g.client_id AND cm.month = g.month GROUP BY g.client_id
), cohorts AS (
    SELECT date_trunc('month', f.first_payment)::DATE AS cohort, cm.month, count(DISTINCT cm.client_id) AS active
    FROM client_month cm JOIN first f USING (client_id) WHERE cm.revenue > 0 GROUP BY ALL
), days AS (SELECT DISTINCT client_id, booking_date FROM pay),
bounds AS (SELECT unnest(generate_series(DATE '2023-11-01', DATE '2026-10-01', INTERVAL 1 MONTH))::DATE AS ps),
ends AS (SELECT ps, (ps + INTERVAL 1 MONTH - INTERVAL 1 DAY)::DATE AS pe, (ps - INTERVAL 1 DAY)::DATE AS pb FROM bounds),
act AS (
    SELECT e.ps, f.client_id,
           max(d.booking_date) FILTER (WHERE d.booking_date <= e.pb) AS last_before,
           max(d.booking_date) FILTER (WHERE d.booking_date <= e.pe) AS last_end,
           any_value(f.first_payment) AS first_payment, any_value(e.pe) AS pe, any_value(e.pb) AS pb
    FROM ends e CROSS JOIN first f JOIN days d ON d.client_id = f.client_id AND d.booking_date <= e.pe
    GROUP BY e.ps, f.client_id
), retention AS (
    SELECT ps, count(*) FILTER (WHERE pb - last_before < 365) AS s, count(*) FILTER (WHERE pe - last_end < 365) AS e,
           count(*) FILTER (WHERE first_payment BETWEEN ps AND pe) AS n
    FROM act GROUP BY ps
)
SELECT (SELECT count(*) FILTER (WHERE months >= 3 AND mean > 0 AND sd / mean <= 0.10) FROM xyz) AS x_clients,
       (SELECT sum(active) FROM cohorts) AS cohort_active,
       (SELECT sum(e) FROM retention) AS e_total
"""


def reference_behaviour(d: dict[str, pl.DataFrame], months: pl.DataFrame) -> tuple:
    con = duckdb.connect()
    con.register("staged", d["staged"].to_arrow())
    con.register("client_month", months.to_arrow())
    return con.execute(BEHAVIOUR_SQL).fetchone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    args = parser.parse_args()
    start = time.perf_counter()
    data = synthesise(args.transactions)
    print(f"synthesised {args.transactions:,} transactions, {data['invoices'].height:,} invoices, "
          f"{data['activities'].height:,} activities, {data['clients'].height:,} clients "
          f"in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    result = ours(data)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = reference(data)
    ref_s = time.perf_counter() - start
    months, card = result["client_month"], result["scorecard"]
    print(f"ours:      {ours_s:7.2f} s  ({months.height:,} client-months, {card.height:,} scorecard rows)")
    print(f"reference: {ref_s:7.2f} s  (DuckDB SQL, same process)")
    print(f"ratio ours / reference: {ours_s / ref_s:.2f}  (target <= 1.5)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB  (target < 8,192)")
    same = (months["revenue"].sum() == ref[0], card.filter(pl.col("abc_revenue") == "A").height == ref[2])
    print(f"same numbers: revenue {months['revenue'].sum()} vs {ref[0]}; net profit {months['net_profit'].sum()} "
          f"vs {ref[1]}; A clients {card.filter(pl.col('abc_revenue') == 'A').height} vs {ref[2]} -> "
          f"{'yes' if all(same) else 'NO'}")
    start = time.perf_counter()
    beh = ours_behaviour(data, months)
    beh_s = time.perf_counter() - start
    start = time.perf_counter()
    beh_ref = reference_behaviour(data, months)
    beh_ref_s = time.perf_counter() - start
    ours_numbers = (beh["xyz"].filter(pl.col("xyz") == "X").height, beh["cohorts"]["active_clients"].sum(),
                    beh["retention"]["clients_end"].sum())
    print(f"behaviour (XYZ, cohorts, monthly retention): ours {beh_s:.2f} s, reference {beh_ref_s:.2f} s, "
          f"ratio {beh_s / beh_ref_s:.2f} (target <= 1.5); X clients / cohort actives / retention E: "
          f"{ours_numbers} vs {tuple(int(v) for v in beh_ref)} -> {'yes' if ours_numbers == tuple(beh_ref) else 'NO'}")


if __name__ == "__main__":
    main()
