"""phase_out_scenarios: what if we phased out the least profitable clients (DOMAIN §1 step 5) — a what-if, not
a decision. Shows the profit gained, the revenue and hours freed, the revenue at risk at once, and how the
concentration of the remaining revenue changes (the seed's two named risks).

Grain: one row per scenario: the bottom N clients by net profit for each configured N, and all loss-makers.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms import metrics as m

NAME = "phase_out_scenarios"
GRAIN = "one row per scenario (bottom N by net profit for each configured N, and all loss-makers)"
KEY = ("scenario",)
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "scenario": (pl.String(), "bottom_<N> | all_loss_makers"),
    "clients_dropped": (pl.Int32(), "Clients phased out"),
    "revenue_lost": (m.MONEY, "Their net revenue over the window"),
    "revenue_lost_share": (pl.Float64(), "Share of total net revenue"),
    "profit_before": (m.MONEY, "Total net profit now"),
    "profit_after": (m.MONEY, "Total net profit without them (their losses gone, their margin too)"),
    "profit_change": (m.MONEY, "profit_after - profit_before"),
    "hours_freed": (pl.Float64(), "Hours our people spent on them"),
    "revenue_at_risk_short_term": (m.MONEY, "Their net revenue of the last 3 months"),
    "top1_share_after": (pl.Float64(), "Share of revenue of the largest remaining client (concentration risk)"),
}


def build(scorecard: pl.LazyFrame, client_month: pl.LazyFrame, *, as_of: dt.date,
          bottom: tuple[int, ...]) -> pl.LazyFrame:
    first, last = m.window_bounds(as_of, 3)
    recent = (client_month.filter(pl.col("month").is_between(first, last)).group_by("client_id")
              .agg(_recent=pl.col("net_revenue").sum()))
    ranked = (scorecard.sort(["net_profit", "client_id"]).with_columns(_pos=pl.int_range(pl.len()))
              .join(recent, on="client_id", how="left", maintain_order="left"))
    scenarios = [(f"bottom_{n}", pl.col("_pos") < n) for n in bottom]
    scenarios.append(("all_loss_makers", pl.col("is_unprofitable")))
    revenue, kept_revenue = m.cents(pl.col("net_revenue")), m.positive_cents("net_revenue")
    rows = [
        ranked.select(
            pl.lit(name).alias("scenario"),
            dropped.sum().cast(pl.Int32).alias("clients_dropped"),
            pl.col("net_revenue").filter(dropped).sum().cast(m.MONEY).alias("revenue_lost"),
            pl.when(revenue.sum() != 0).then(revenue.filter(dropped).sum().cast(pl.Float64)
                                             / revenue.sum().cast(pl.Float64)).alias("revenue_lost_share"),
            pl.col("net_profit").sum().cast(m.MONEY).alias("profit_before"),
            pl.col("net_profit").filter(~dropped).sum().cast(m.MONEY).alias("profit_after"),
            (-pl.col("net_profit").filter(dropped).sum()).cast(m.MONEY).alias("profit_change"),
            m.fsum(pl.col("hours_spent").filter(dropped)).alias("hours_freed"),
            pl.col("_recent").filter(dropped).sum().fill_null(0).cast(m.MONEY).alias("revenue_at_risk_short_term"),
            m.ratio(kept_revenue.filter(~dropped).max(), kept_revenue.filter(~dropped).sum()).alias("top1_share_after"),
        )
        for name, dropped in scenarios
    ]
    return pl.concat(rows).select(list(SCHEMA))
