"""client_scorecard: every client on one line — money, cost to serve, profit, rank and ABC (DOMAIN §1-2).

Grain: one row per client (CRM clients and bank counterparties that became clients) as of the run date, over
the scorecard window (the last N full months, default 12).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms import behaviour
from transforms import metrics as m
from transforms.marts import dependency, key_clients

NAME = "client_scorecard"
GRAIN = "one row per client as of the run date, over the trailing window of full months (default 12)"
KEY = ("client_id",)
PARTITION_BY = None
_MONEY_COLUMNS = ("revenue", "refunds", "net_revenue", "gross_margin", "communication_cost", "support_cost",
                  "collection_cost", "bad_debt", "net_profit")
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "client_id": (pl.String(), "Client id (CRM, or bank:... for a bank-only counterparty)"),
    "name": m.CLIENT_NAME,
    "source": (pl.String(), "crm | bank"),
    "industry": (pl.String(), "CRM industry"),
    "manager_id": (pl.String(), "Responsible manager"),
    "region": (pl.String(), "CRM region"),
    "size_band": (pl.String(), "CRM size band"),
    "acquisition_channel": (pl.String(), "CRM acquisition channel"),
    "satisfaction": (pl.Float64(), "CRM satisfaction score"),
    "tenure_years": (pl.Float64(), "Years from the CRM creation date (else the first payment) to as-of"),
    "as_of": (pl.Date(), "Run date"),
    "window_start": (pl.Date(), "First month of the window"),
    "window_end": (pl.Date(), "Last month of the window"),
    "revenue": (m.MONEY, "Incoming payments in the window"),
    "refunds": (m.MONEY, "Refunds in the window"),
    "net_revenue": (m.MONEY, "revenue - refunds"),
    "purchases": (pl.Int32(), "Incoming payments (count)"),
    "gross_margin": (m.MONEY, "Gross margin in the window"),
    "communication_cost": (m.MONEY, "Activity time cost"),
    "support_cost": (m.MONEY, "Ticket time cost"),
    "collection_cost": (m.MONEY, "Late payment financing cost"),
    "bad_debt": (m.MONEY, "Invoices written off"),
    "cost_to_serve": (m.MONEY, "communication + support + collection + bad debt"),
    "net_profit": (m.MONEY, "gross_margin - cost_to_serve"),
    "profit_margin": (pl.Float64(), "net_profit / net_revenue (null without revenue)"),
    "hours_spent": (pl.Float64(), "Hours our people spent on the client"),
    "revenue_per_hour": (pl.Float64(), "net_revenue / hours_spent (null without hours)"),
    "avg_days_late": (pl.Float64(), "Average days late of the invoices paid in the window (early counts as 0)"),
    "overdue_amount": (m.MONEY, "Open invoice amounts past due at as-of, not yet written off"),
    "revenue_rank": (pl.Int32(), "1 = largest net revenue (ties by client id)"),
    "revenue_cumulative_share": (pl.Float64(), "Share of total net revenue of this client and all above it"),
    "abc_revenue": (pl.String(), "A/B/C/D by net revenue (A: share before < 80%, B: < 95%, D: <= 0)"),
    "profit_rank": (pl.Int32(), "1 = largest net profit"),
    "profit_cumulative_share": (pl.Float64(), "Share of total positive profit of this client and all above it"),
    "abc_profit": (pl.String(), "A/B/C/D by net profit (D: no profit or a loss)"),
    "is_unprofitable": (pl.Boolean(), "Net profit below zero: revenue does not cover the cost of serving"),
    "revenue_share": (pl.Float64(), "Share of the company's positive net revenue"),
    "key_client_reasons": (pl.String(), "Why the client is key for the company: share > 10% | potential | "
                                        "reference | innovator | demanding (null: not key)"),
    "dependency_level": (pl.String(), "What the company's dependency on this client calls for: ok | diversify | "
                                      "severe | critical"),
    "xyz_months": (pl.Int32(), "Months observed for XYZ: from the later of window start and first purchase"),
    "revenue_cv": (pl.Float64(), "Coefficient of variation of monthly net revenue (population std / mean)"),
    "xyz": (pl.String(), "X (CV <= 0.10) | Y (<= 0.25) | Z; null with fewer than 3 months or no revenue"),
    "abc_xyz": (pl.String(), "abc_revenue + xyz (AX .. CZ); null when either is missing or ABC is D"),
    "last_payment_date": (pl.Date(), "Last booked payment"),
    "days_since_last_payment": (pl.Int32(), "Days from the last payment to as-of"),
    "usual_gap_days": (pl.Float64(), "Median days between the client's payment days (null under 3 payment days)"),
    "is_at_risk": (pl.Boolean(), "Silent longer than at_risk_factor x its usual gap, but not yet lost"),
    "revenue_last_12m": (m.MONEY, "Net revenue of the last 12 full months"),
    "revenue_prev_12m": (m.MONEY, "Net revenue of the 12 months before"),
    "is_growing": (pl.Boolean(), "revenue_last_12m > revenue_prev_12m"),
    "ladder_stage": (pl.String(), "Loyalty ladder at as-of: first_purchase | repeat | regular | adherent | advocate | "
                                  "lost (null: never bought)"),
    "ltv_s": (pl.Float64(), "LTV factor S: average check (net revenue / purchases, whole history)"),
    "ltv_c": (pl.Float64(), "LTV factor C: purchases per month of the client's buying span"),
    "ltv_p": (pl.Float64(), "LTV factor P: net profit / net revenue (whole history)"),
    "ltv_t": (pl.Float64(), "LTV factor T: average buying span (months) of its ABC segment, or of all clients"),
    "ltv": (pl.Float64(), "LTV = S x C x P x T"),
    "segment_id": (pl.Int32(), "Priority of the first configured segment rule the client meets (1 = highest)"),
    "segment_name": (pl.String(), "That segment's name"),
    "team": (pl.String(), "The team that owns the segment: upsell | win_back | new_business"),
    "clv_purchases_12m": (pl.Float64(), "BG/NBD expected purchase days in the next 12 months"),
    "clv_p_alive": (pl.Float64(), "BG/NBD probability the client is still alive"),
    "clv_expected_spend": (pl.Float64(), "Gamma-Gamma expected value of a purchase day"),
    "clv_revenue_12m": (pl.Float64(), "Expected revenue of the next 12 months: purchases x spend"),
    "reporting_currency": (pl.String(), "ISO 4217 code of every amount"),
}
SEGMENT_COLUMNS = ("segment_id", "segment_name", "team")


def _ranked(frame: pl.DataFrame, measure: str, prefix: str, a: float, b: float) -> pl.DataFrame:
    """Rank, cumulative share and ABC class. Eager on purpose: one row per client, and the window
    expressions need the rank order (see pareto_summary for the lazy-sort pitfall)."""
    keys, descending = m.rank_order(measure)
    share = m.ratio(m.positive_cents(measure).cum_sum(), m.positive_cents(measure).sum()).fill_null(0.0)
    return frame.sort(keys, descending=descending).with_columns(
        pl.int_range(1, pl.len() + 1).cast(pl.Int32).alias(f"{prefix}_rank"),
        share.alias(f"{prefix}_cumulative_share"),
        m.abc_category(measure, a, b).alias(f"abc_{prefix}"),
    )


def build(client_month: pl.LazyFrame, clients: pl.LazyFrame, settlement: pl.LazyFrame | None, *,
          as_of: dt.date, window_months: int, reporting_currency: str, abc_a: float = 0.80,
          abc_b: float = 0.95, xyz: pl.LazyFrame | None = None, activity: pl.LazyFrame | None = None,
          trend: pl.LazyFrame | None = None, ladder: pl.LazyFrame | None = None,
          ltv_min_segment: int = 30, segments: tuple = (), clv: pl.DataFrame | None = None,
          key_share: float = 0.10, dependency_levels: tuple[float, float, float] = (0.20, 0.40, 0.50)
          ) -> pl.LazyFrame:
    """``segments``: ordered (name, team, rule) triples; each client gets the first whose rule it meets.
    ``xyz``, ``activity``, ``trend``: behaviour.xyz / activity / turnover_trend frames keyed by client_id."""
    first, last = m.window_bounds(as_of, window_months)
    sums = (
        client_month.filter(pl.col("month").is_between(first, last))
        .group_by("client_id")
        .agg(*(pl.col(c).sum() for c in (*_MONEY_COLUMNS, "purchases")), m.fsum(pl.col("hours_spent")))
    )
    present = set(clients.collect_schema().names())

    def optional(column: str, dtype: pl.DataType) -> pl.Expr:  # the CRM may not have it (bank-only mode)
        return (pl.col(column) if column in present else pl.lit(None)).cast(dtype).alias(column)

    since = pl.coalesce(optional("created_date", pl.Date()), optional("first_payment_date", pl.Date()))
    dim = clients.select("client_id", "name", "source", "industry", "manager_id",
                         *(optional(c, pl.String()) for c in ("region", "size_band", "acquisition_channel")),
                         optional("satisfaction", pl.Float64()),
                         ((pl.lit(as_of) - since).dt.total_days() / 365.25).alias("tenure_years"))
    frame = (
        dim.join(sums, on="client_id", how="full", coalesce=True)
        .with_columns(*(pl.col(c).fill_null(0).cast(m.MONEY) for c in _MONEY_COLUMNS),
                      pl.col("purchases").fill_null(0).cast(pl.Int32), pl.col("hours_spent").fill_null(0.0),
                      pl.col("source").fill_null("crm"))
        .with_columns(cost_to_serve=(pl.col("communication_cost") + pl.col("support_cost")
                                     + pl.col("collection_cost") + pl.col("bad_debt")).cast(m.MONEY))
    )
    if settlement is not None:
        lateness = (
            settlement.filter(pl.col("paid_date").is_between(first, m.month_end(last)))
            .group_by("client_id").agg(avg_days_late=pl.col("days_late").clip(lower_bound=0).mean())
        )
        overdue = (
            settlement.filter((pl.col("open_amount") > 0) & ~pl.col("written_off") & (pl.col("due_date") < as_of))
            .group_by("client_id").agg(overdue_amount=pl.col("open_amount").sum().cast(m.MONEY))
        )
        frame = frame.join(lateness, on="client_id", how="left").join(overdue, on="client_id", how="left")
    else:
        frame = frame.with_columns(avg_days_late=pl.lit(None, pl.Float64), overdue_amount=pl.lit(None, m.MONEY))
    frame = frame.with_columns(
        pl.col("overdue_amount").fill_null(0).cast(m.MONEY),
        profit_margin=m.profit_margin(),
        revenue_per_hour=pl.when(pl.col("hours_spent") > 0).then(
            pl.col("net_revenue").cast(pl.Float64) / pl.col("hours_spent")),
        is_unprofitable=pl.col("net_profit") < 0,
        as_of=pl.lit(as_of), window_start=pl.lit(first), window_end=pl.lit(last),
        reporting_currency=pl.lit(reporting_currency),
    )
    if xyz is not None:
        frame = frame.join(xyz, on="client_id", how="left")
    else:
        frame = frame.with_columns(xyz_months=pl.lit(None, pl.Int32), revenue_cv=pl.lit(None, pl.Float64),
                                   xyz=pl.lit(None, pl.String))
    for extra, columns in ((activity, ("last_payment_date", "days_since_last_payment", "usual_gap_days",
                                       "is_at_risk")),
                           (trend, ("revenue_last_12m", "revenue_prev_12m", "is_growing"))):
        if extra is not None:
            frame = frame.join(extra.select("client_id", *columns), on="client_id", how="left")
        else:
            frame = frame.with_columns(pl.lit(None).alias(c) for c in columns)
    frame = frame.with_columns(pl.col("is_at_risk").fill_null(False),
                               pl.col("revenue_last_12m", "revenue_prev_12m").fill_null(0).cast(m.MONEY),
                               pl.col("is_growing").fill_null(False))
    ranked = _ranked(frame.collect(), "net_profit", "profit", abc_a, abc_b)
    ranked = _ranked(ranked, "net_revenue", "revenue", abc_a, abc_b)
    ranked = (ranked.join(ladder.collect(), on="client_id", how="left") if ladder is not None
              else ranked.with_columns(ladder_stage=pl.lit(None, pl.String)))
    share = m.share_of_total("net_revenue")
    flags = [c for c in key_clients.FLAGS if c in present]
    flag_table = clients.select("client_id", *flags).collect()
    ranked = ranked.join(flag_table, on="client_id", how="left").with_columns(revenue_share=share)
    ranked = ranked.with_columns(
        key_client_reasons=key_clients.reasons(pl.col("revenue_share"), key_share, flags),
        dependency_level=dependency.level_of(pl.col("revenue_share"), *dependency_levels),
    ).drop(flags)
    clv_columns = ("clv_purchases_12m", "clv_p_alive", "clv_expected_spend", "clv_revenue_12m")
    ranked = (ranked.join(clv.select("client_id", *clv_columns), on="client_id", how="left") if clv is not None
              else ranked.with_columns(pl.lit(None, pl.Float64).alias(c) for c in clv_columns))
    # LTV's T is the average lifetime of the client's segment: its ABC class, known only after ranking
    abc_segments = ranked.lazy().select("client_id", pl.col("abc_revenue").alias("segment"))
    ranked = ranked.join(behaviour.ltv(client_month, abc_segments, as_of=as_of, min_segment=ltv_min_segment).collect(),
                         on="client_id", how="left")
    ranked = ranked.with_columns(
        pl.col("xyz_months").fill_null(0).cast(pl.Int32),
        abc_xyz=pl.when((pl.col("abc_revenue") != "D") & pl.col("xyz").is_not_null())
        .then(pl.col("abc_revenue") + pl.col("xyz")))
    return assign_segments(ranked, segments).select(list(SCHEMA)).cast(
        {c: t for c, (t, _) in SCHEMA.items()}).lazy()


def rule_columns() -> list[str]:
    """What segment rules may name: every scorecard column except the segment columns themselves."""
    return [c for c in SCHEMA if c not in SEGMENT_COLUMNS]


def assign_segments(card: pl.DataFrame, segments: tuple) -> pl.DataFrame:
    """segment_id / segment_name / team of the first rule each client meets (DOMAIN §8.3)."""
    from transforms.rules import compile_rule

    ids, names, teams = pl.lit(None, pl.Int32), pl.lit(None, pl.String), pl.lit(None, pl.String)
    for priority, (name, team, rule) in reversed(list(enumerate(segments, start=1))):
        hit = compile_rule(rule, rule_columns())
        ids = pl.when(hit).then(pl.lit(priority, pl.Int32)).otherwise(ids)
        names = pl.when(hit).then(pl.lit(name)).otherwise(names)
        teams = pl.when(hit).then(pl.lit(team)).otherwise(teams)
    return card.with_columns(segment_id=ids, segment_name=names, team=teams)
