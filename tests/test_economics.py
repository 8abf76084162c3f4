"""Hand-computed cases for every cost component and the concentration measures (DOMAIN §1-3)."""

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from transforms import economics
from transforms import metrics as m
from transforms.marts import (
    client_month,
    client_scorecard,
    pareto_summary,
    phase_out_scenarios,
    unprofitable_audit,
    whale_curve,
)

D = Decimal
AS_OF = dt.date(2025, 6, 30)


def invoices(rows):
    return pl.DataFrame(rows, schema={"client_id": pl.String, "invoice_id": pl.String, "issue_date": pl.Date,
                                      "due_date": pl.Date, "amount": m.MONEY, "status": pl.String},
                        orient="row").lazy()


def payments(rows):
    return pl.DataFrame(rows, schema={"client_id": pl.String, "booking_date": pl.Date,
                                      "amount_reporting": m.MONEY}, orient="row").lazy()


def fifo_case() -> pl.LazyFrame:
    """The parts of each invoice paid on one day (``economics.settlement_parts``)."""
    return economics.settlement_parts(
        invoices([
            ("C1", "I1", dt.date(2025, 1, 1), dt.date(2025, 1, 31), D("1000.00"), "won"),
            ("C1", "I2", dt.date(2025, 2, 1), dt.date(2025, 3, 3), D("500.00"), "won"),
            ("C1", "I3", dt.date(2025, 3, 1), dt.date(2025, 3, 31), D("800.00"), "won"),
            ("C1", "LOST", dt.date(2025, 3, 1), dt.date(2025, 3, 31), D("999.00"), "lost"),
            ("C2", "J1", dt.date(2024, 10, 1), dt.date(2024, 10, 31), D("300.00"), "won"),
        ]),
        payments([
            ("C1", dt.date(2025, 2, 10), D("1000.00")),   # pays I1, 10 days late
            ("C1", dt.date(2025, 3, 3), D("300.00")),     # part of I2, on its due day
            ("C1", dt.date(2025, 3, 20), D("400.00")),    # completes I2 (17 days late), 200 towards I3 (early)
            ("C2", dt.date(2024, 11, 5), D("100.00")),    # J1 never completed
        ]),
        as_of=AS_OF,
    )


def fifo_costs(parts: pl.LazyFrame, as_of: dt.date = AS_OF) -> pl.DataFrame:
    return economics.settlement_costs(parts, as_of=as_of, cost_of_capital=0.365, write_off_days=180).collect()


def test_settlement_first_in_first_out():
    parts = fifo_case()
    assert sorted(parts.select("invoice_id", "part_amount", "paid_date", "final").collect().rows(),
                  key=lambda r: (r[0], r[2] or dt.date.max)) == [
        ("I1", D("1000.00"), dt.date(2025, 2, 10), True),
        ("I2", D("300.00"), dt.date(2025, 3, 3), False), ("I2", D("200.00"), dt.date(2025, 3, 20), True),
        ("I3", D("200.00"), dt.date(2025, 3, 20), False), ("I3", D("600.00"), None, True),  # open remainder
        ("J1", D("100.00"), dt.date(2024, 11, 5), False), ("J1", D("200.00"), None, True)]
    out = economics.invoice_settlement(parts, as_of=AS_OF, write_off_days=180).collect()
    rows = {r["invoice_id"]: r for r in out.iter_rows(named=True)}
    assert set(rows) == {"I1", "I2", "I3", "J1"}  # lost deals are not receivables
    assert (rows["I1"]["paid_date"], rows["I1"]["days_late"], rows["I1"]["event_month"]) == (
        dt.date(2025, 2, 10), 10, dt.date(2025, 2, 1))
    assert (rows["I2"]["paid_date"], rows["I2"]["days_late"], rows["I2"]["open_amount"]) == (
        dt.date(2025, 3, 20), 17, D("0.00"))
    # I3: 600 still open, 91 days past due at as-of (not written off yet)
    assert (rows["I3"]["paid_date"], rows["I3"]["open_amount"], rows["I3"]["days_late"]) == (None, D("600.00"), 91)
    assert (rows["I3"]["written_off"], rows["I3"]["bad_debt"], rows["I3"]["event_month"]) == (
        False, D("0.00"), dt.date(2025, 6, 1))
    # J1: 200 open, 242 days past due > 180: written off on due + 180 days, as bad debt, in that month
    assert (rows["J1"]["written_off"], rows["J1"]["bad_debt"], rows["J1"]["event_month"]) == (
        True, D("200.00"), dt.date(2025, 4, 1))


def test_collection_cost_accrues_in_the_months_each_part_is_late():
    out = fifo_costs(fifo_case()).sort("client_id", "month")
    # amount x days late x rate / 365 with rate 36.5%: 0.001 per unit and day
    assert [(r[0], r[1], round(r[2], 9), r[3]) for r in out.rows()] == [
        ("C1", dt.date(2025, 2, 1), 10.0, 0.0),  # I1: 1000 late Feb 1-10
        ("C1", dt.date(2025, 3, 1), 3.4, 0.0),  # I2: 300 paid on its due day, 200 late Mar 4-20 (not 500)
        ("C1", dt.date(2025, 4, 1), 18.0, 0.0),  # I3: 600 open from Apr 1 to as-of Jun 30: 30 + 31 + 30 days
        ("C1", dt.date(2025, 5, 1), 18.6, 0.0),
        ("C1", dt.date(2025, 6, 1), 18.0, 0.0),
        # J1: 100 late Nov 1-5; 200 late from 2024-11-01 to its write-off day 2025-04-29 (180 days at 0.2 a
        # day), written off then
        ("C2", dt.date(2024, 11, 1), 6.5, 0.0), ("C2", dt.date(2024, 12, 1), 6.2, 0.0),
        ("C2", dt.date(2025, 1, 1), 6.2, 0.0), ("C2", dt.date(2025, 2, 1), 5.6, 0.0),
        ("C2", dt.date(2025, 3, 1), 6.2, 0.0), ("C2", dt.date(2025, 4, 1), 5.8, 200.0)]
    assert out["collection_cost"].sum() == pytest.approx(10 + 3.4 + 600 * 91 * 0.001 + 0.5 + 200 * 180 * 0.001)


def test_a_past_month_keeps_its_exact_cost_while_an_open_invoice_ages_and_is_paid_in_part():
    """Each night as-of moves one day; an invoice still open adds a day to the as-of month, and an instalment
    paid today ends the lateness of its part today: the months before stay exactly as they were, to the bit
    (client_month's months are carried over by their inputs' digests, so a past month that moved in its last
    bits would be recomputed every night)."""
    amounts = [D("1234.57"), D("989.13"), D("70000.01"), D("333.33"), D("5.99"), D("81234.77")]
    rows = [(f"C{i}", f"I{i}", dt.date(2025, 1, 2 + i), dt.date(2025, 2, 3 + i), amount, "won")
            for i, amount in enumerate(amounts)]

    def past_months(as_of: dt.date, paid: list[tuple]) -> pl.DataFrame:
        parts = economics.settlement_parts(invoices(rows), payments(paid), as_of=as_of)
        costs = economics.settlement_costs(parts, as_of=as_of, cost_of_capital=0.117, write_off_days=365)
        return costs.filter(pl.col("month") < dt.date(2025, 6, 1)).collect().sort("client_id", "month")

    first = past_months(dt.date(2025, 6, 3), [])
    assert first.height == len(amounts) * 4  # Feb to May
    instalments = []
    for day in range(4, 30):
        if day % 5 == 0:  # someone pays a third of what they owe
            i = day % len(amounts)
            instalments.append((f"C{i}", dt.date(2025, 6, day), (amounts[i] / 3).quantize(D("0.01"))))
        assert past_months(dt.date(2025, 6, day), instalments).equals(first)  # exact floats, not approximately
    # and May holds 31 days of 70000.01 x 11.7% / 365
    may = first.filter((pl.col("client_id") == "C2") & (pl.col("month") == dt.date(2025, 5, 1)))
    assert may["collection_cost"].item() == pytest.approx(70000.01 * 0.117 / 365 * 31, rel=1e-12)


def test_an_invoice_open_mid_month_costs_in_the_full_months_of_the_window():
    """As of the 15th, the scorecard's window is the last 12 full months: the days an open invoice was late in
    them count (they used to wait in the as-of month, outside the window, until it was paid)."""
    as_of = dt.date(2024, 9, 15)
    parts = economics.settlement_parts(
        invoices([("C", "I", dt.date(2024, 4, 1), dt.date(2024, 5, 1), D("3650.00"), "won")]),
        payments([("C", dt.date(2024, 3, 10), D("1000.00"))]), as_of=as_of)
    settlement = economics.invoice_settlement(parts, as_of=as_of, write_off_days=180)
    staged = pl.LazyFrame({"client_id": ["C"], "booking_date": [dt.date(2024, 3, 10)],
                           "amount_reporting": [D("1000.00")], "category": ["client_payment"], "status": ["BOOK"]},
                          schema_overrides={"amount_reporting": m.MONEY})
    months = client_month.build(staged, as_of=as_of, reporting_currency="EUR", settlement_costs=economics.settlement_costs(
        parts, as_of=as_of, cost_of_capital=0.10, write_off_days=180))
    clients = pl.LazyFrame({"client_id": ["C"], "name": ["C"], "source": ["crm"], "industry": [None],
                            "manager_id": [None]}, schema_overrides={"industry": pl.String, "manager_id": pl.String})
    card = client_scorecard.build(months, clients, settlement, as_of=as_of, window_months=12,
                                  reporting_currency="EUR").collect().row(0, named=True)
    # 2650 open, late May 2 - Aug 31 in the window: 122 days x 2650 x 10% / 365
    assert (card["overdue_amount"], card["collection_cost"]) == (D("2650.00"), D("88.58"))
    assert card["net_profit"] == D("300.00") - D("88.58")  # 1000 x the default margin 30%, less the cost


def test_settlement_matches_a_plain_fifo_loop_whatever_the_row_order():
    """Many clients whose ids sort unlike their dates, in shuffled order: each day's payments pay the oldest
    balances in turn, and an invoice is paid on the day its balance reaches zero (a per-client loop as the
    oracle, for the parts and the settlement days)."""
    import random

    rng = random.Random(7)
    inv_rows, pay_rows = [], []
    for c in range(40):
        client = f"K{rng.randrange(1000):03d}-{c}"
        for i in range(rng.randrange(1, 6)):
            issue = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(400))
            inv_rows.append((client, f"{c}-{i}", issue, issue + dt.timedelta(days=rng.choice([0, 14, 30])),
                             D(rng.randrange(1, 500_00)) / 100, "won"))
        for _ in range(rng.randrange(0, 6)):
            pay_rows.append((client, dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(500)),
                             D(rng.randrange(1, 400_00)) / 100))
    rng.shuffle(inv_rows)
    rng.shuffle(pay_rows)
    parts = economics.settlement_parts(invoices(inv_rows), payments(pay_rows), as_of=AS_OF).collect()
    out = economics.invoice_settlement(parts.lazy(), as_of=AS_OF, write_off_days=180).collect()
    expected, expected_parts = {}, []
    for client in {r[0] for r in inv_rows}:
        days: dict[dt.date, Decimal] = {}
        for _, day, amount in (r for r in pay_rows if r[0] == client and r[1] <= AS_OF):
            days[day] = days.get(day, D(0)) + amount
        # each day's money pays the oldest invoices' balances in turn
        owed = [[invoice, amount] for _, invoice, _issue, _due, amount, _ in sorted(
            (r for r in inv_rows if r[0] == client and r[2] <= AS_OF), key=lambda r: (r[3], r[2], r[1]))]
        for day in sorted(days):
            money = days[day]
            for balance in owed:
                if money == 0:
                    break
                if balance[1] > 0:
                    part = min(money, balance[1])
                    balance[1] -= part
                    money -= part
                    expected_parts.append((balance[0], part, day))
                    if balance[1] == 0:
                        expected[balance[0]] = day
        for invoice, left in owed:
            if left > 0:
                expected[invoice] = None
                expected_parts.append((invoice, left, None))
    assert len(expected) > 100 and sum(v is None for v in expected.values()) > 10
    assert dict(out.select("invoice_id", "paid_date").iter_rows()) == expected
    key = lambda r: (r[0], r[2] or dt.date.max, r[1])  # noqa: E731
    assert sorted(parts.select("invoice_id", "part_amount", "paid_date").rows(), key=key) == sorted(
        expected_parts, key=key)
    assert len(expected_parts) > len(expected) + 40  # many invoices paid in several parts


def test_time_costs_use_each_persons_hourly_cost():
    activities = pl.LazyFrame({
        "client_id": ["C1", "C1", "C2"], "manager_id": ["M1", "M9", "M1"],
        "started_at": [dt.datetime(2025, 1, 5, 10), dt.datetime(2025, 1, 6, 9), dt.datetime(2025, 8, 1, 9)],
        "duration_minutes": [30.0, 60.0, 600.0]})
    tickets = pl.LazyFrame({"client_id": ["C1"], "manager_id": ["M1"], "opened_at": [dt.date(2025, 2, 3)],
                            "minutes_spent": [90.0]})
    managers = pl.LazyFrame({"manager_id": ["M1"], "hourly_cost": [D("60.00")]})
    out = economics.time_costs(activities, tickets, managers, as_of=AS_OF, default_hourly_cost=40,
                               support_hourly_cost=None).collect().sort("month")
    # Jan: 30 min x 60/h + 60 min x 40/h (unknown manager: default) = 30 + 40; Feb: 90 min x 60/h = 90 support
    # August is after as-of: not counted
    assert out.rows() == [("C1", dt.date(2025, 1, 1), 70.0, 0.0, 90.0), ("C1", dt.date(2025, 2, 1), 0.0, 90.0, 90.0)]


def test_margin_rates_invoices_then_industry_then_default():
    inv = pl.LazyFrame({"client_id": ["C1", "C1", "C2"], "amount": [D("100.00"), D("300.00"), D("50.00")],
                        "cost": [D("60.00"), D("180.00"), None], "status": ["won", "won", "won"]},
                       schema_overrides={"amount": m.MONEY, "cost": m.MONEY})
    clients = pl.LazyFrame({"client_id": ["C1", "C2", "C3"], "industry": ["retail", "transport", None]})
    out = economics.margin_rates(inv, clients, default_margin=0.3, margin_by_industry={"transport": 0.12})
    assert sorted(out.collect().rows()) == [("C1", 0.4, "invoices"), ("C2", 0.12, "industry"),
                                            ("C3", 0.3, "default")]


def scorecard_from(values: dict[str, Decimal], profits: dict[str, Decimal] | None = None) -> pl.DataFrame:
    months = pl.DataFrame({
        "client_id": list(values), "month": [dt.date(2025, 6, 1)] * len(values),
        "revenue": list(values.values()), "refunds": [D("0")] * len(values), "net_revenue": list(values.values()),
        "purchases": [1] * len(values),
        "gross_margin": list((profits or values).values()),
        **{c: [D("0")] * len(values) for c in ("communication_cost", "support_cost", "collection_cost", "bad_debt")},
        "net_profit": list((profits or values).values()), "hours_spent": [1.0] * len(values),
        "reporting_currency": ["EUR"] * len(values),
    }).cast({c: m.MONEY for c in ("revenue", "refunds", "net_revenue", "gross_margin", "communication_cost",
                                  "support_cost", "collection_cost", "bad_debt", "net_profit")})
    clients = pl.DataFrame({"client_id": list(values), "name": list(values), "source": ["crm"] * len(values),
                            "industry": [None] * len(values), "manager_id": [None] * len(values)},
                           schema_overrides={"industry": pl.String, "manager_id": pl.String})
    return client_scorecard.build(months.lazy(), clients.lazy(), None, as_of=AS_OF, window_months=12,
                                  reporting_currency="EUR").collect()


def test_seed_004_abc_on_ten_million():
    # given in shuffled order: the ranking must not depend on the input order
    card = scorecard_from({"e": D("300000"), "a": D("5000000"), "g": D("0"), "c": D("1000000"), "b": D("3000000"),
                           "f": D("200000"), "d": D("500000")})
    by_class = card.group_by("abc_revenue").agg(pl.col("net_revenue").sum()).sort("abc_revenue").rows()
    assert by_class == [("A", D("8000000.00")), ("B", D("1500000.00")), ("C", D("500000.00")), ("D", D("0.00"))]
    assert card.sort("revenue_rank")["client_id"].to_list() == list("abcdefg")


def test_abc_ties_broken_by_client_id_and_losses_are_d():
    card = scorecard_from({"b": D("10"), "a": D("10"), "c": D("5")},
                          profits={"b": D("10"), "a": D("-3"), "c": D("0")})
    assert card.sort("revenue_rank")["client_id"].to_list() == ["a", "b", "c"]
    assert dict(card.select("client_id", "abc_profit").iter_rows()) == {"b": "A", "a": "D", "c": "D"}
    assert dict(card.select("client_id", "is_unprofitable").iter_rows()) == {"b": False, "a": True, "c": False}


def test_seed_000_twenty_of_hundred_bring_eighty_percent():
    values = {f"c{i:03d}": D("4000") if i % 5 == 0 else D("250") for i in range(100)}  # top 20 interleaved
    summary = pareto_summary.build(scorecard_from(values).lazy()).collect()
    revenue = summary.filter(pl.col("measure") == "revenue").row(0, named=True)
    assert (revenue["clients"], revenue["total"], revenue["top_share"]) == (100, D("100000.00"), pytest.approx(0.80))
    assert (revenue["reach"], revenue["clients_share_to_reach"]) == (0.80, pytest.approx(0.20))
    half = pareto_summary.build(scorecard_from(values).lazy(), reach=0.5).collect().row(0, named=True)
    assert (half["reach"], half["clients_share_to_reach"]) == (0.5, pytest.approx(0.13))  # 12.5 of the 20
    assert revenue["top1_share"] == pytest.approx(0.04)
    assert revenue["top10_share"] == pytest.approx(0.40)
    # 300 CRM leads that never bought (no revenue, no cost) are not among the clients the shares speak of
    leads = {f"lead{i:03d}": D("0") for i in range(300)}
    with_leads = pareto_summary.build(scorecard_from(values | leads).lazy()).collect().row(0, named=True)
    assert {k: with_leads[k] for k in ("clients", "top_share", "clients_share_to_reach", "gini", "clients_d")} == {
        "clients": 100, "top_share": pytest.approx(0.80), "clients_share_to_reach": pytest.approx(0.20),
        "gini": pytest.approx(revenue["gini"]), "clients_d": 300}



@pytest.mark.parametrize(("clients", "fraction", "top"), [(25, 0.28, 7), (100, 0.28, 28), (100, 0.07, 7),
                                                          (50, 0.14, 7), (7, 0.20, 2), (3, 0.01, 1)])
def test_top_fraction_counts_the_clients_in_integers(clients, fraction, top):
    # seed 001's 28%: in floats 25 x 0.28 = 7.000000000000001, whose ceiling would count an eighth client
    card = scorecard_from({f"c{i:03d}": D("100") for i in range(clients)})
    summary = pareto_summary.build(card.lazy(), top_fraction=fraction).collect()
    assert summary.filter(pl.col("measure") == "revenue")["top_share"].item() == pytest.approx(top / clients)

def test_gini_and_hhi_hand_computed():
    frame = pl.DataFrame({"v": [4.0, 3.0, 2.0, 1.0]})  # sorted largest first, as the marts do
    # Gini = sum((2i - n - 1) x_i) / (n sum x) = (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 10/40
    assert frame.select(m.gini("v")).item() == pytest.approx(0.25)
    # HHI = 0.1^2 + 0.2^2 + 0.3^2 + 0.4^2
    assert frame.select(m.hhi("v")).item() == pytest.approx(0.30)
    equal = pl.DataFrame({"v": [5.0] * 4})
    assert equal.select(m.gini("v")).item() == pytest.approx(0.0)
    assert equal.select(m.hhi("v")).item() == pytest.approx(0.25)


def test_whale_curve_peaks_before_the_loss_makers():
    card = scorecard_from({"c": D("100"), "a": D("100"), "d": D("100"), "b": D("100")},
                          profits={"c": D("-10"), "a": D("60"), "d": D("-20"), "b": D("30")})
    curve = whale_curve.build(card.lazy()).collect()
    assert curve.select("client_id", "cumulative_profit", "is_peak").rows() == [
        ("a", D("60.00"), False), ("b", D("90.00"), True), ("c", D("80.00"), False), ("d", D("60.00"), False)]
    assert curve["cumulative_profit_share"].to_list() == pytest.approx([1.0, 1.5, 4 / 3, 1.0])


def test_audit_and_phase_out_what_if():
    card = scorecard_from({"a": D("1000"), "b": D("200"), "c": D("100")},
                          profits={"a": D("300"), "b": D("-50"), "c": D("-20")})
    card = card.with_columns(
        support_cost=pl.when(pl.col("client_id") == "b").then(D("80")).otherwise(D("0")).cast(m.MONEY),
        bad_debt=pl.when(pl.col("client_id") == "c").then(D("25")).otherwise(D("0")).cast(m.MONEY))
    months = pl.DataFrame({"client_id": ["b", "c"], "month": [dt.date(2025, 5, 1)] * 2,
                           "net_revenue": [D("40"), D("10")]}).cast({"net_revenue": m.MONEY})
    audit = unprofitable_audit.build(card.lazy(), months.lazy(), as_of=AS_OF).collect()
    assert audit.select("client_id", "main_reason", "revenue_last_3_months").rows() == [
        ("b", "support_cost", D("40.00")), ("c", "bad_debt", D("10.00"))]
    scenarios = phase_out_scenarios.build(card.lazy(), months.lazy(), as_of=AS_OF, bottom=(1,)).collect()
    rows = {r["scenario"]: r for r in scenarios.iter_rows(named=True)}
    assert (rows["bottom_1"]["clients_dropped"], rows["bottom_1"]["profit_change"]) == (1, D("50.00"))
    everyone = rows["all_loss_makers"]
    assert (everyone["clients_dropped"], everyone["revenue_lost"], everyone["profit_before"],
            everyone["profit_after"], everyone["revenue_at_risk_short_term"]) == (
        2, D("300.00"), D("230.00"), D("300.00"), D("50.00"))
    assert everyone["top1_share_after"] == pytest.approx(1.0)  # one client left: full concentration


def test_window_is_the_last_full_months():
    assert m.window_bounds(dt.date(2025, 6, 30), 12) == (dt.date(2024, 7, 1), dt.date(2025, 6, 1))
    assert m.window_bounds(dt.date(2025, 6, 15), 12) == (dt.date(2024, 6, 1), dt.date(2025, 5, 1))
    assert m.window_bounds(dt.date(2024, 2, 29), 1) == (dt.date(2024, 2, 1), dt.date(2024, 2, 1))
