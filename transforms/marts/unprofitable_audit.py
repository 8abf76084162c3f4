"""unprofitable_audit: each client whose revenue does not cover the cost of serving it, and why (DOMAIN §1 steps
3-4). The what-if of phasing them out is the ``phase_out_scenarios`` mart.

Grain: one row per unprofitable client (net profit < 0 over the scorecard window), biggest loss first.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms import metrics as m

NAME = "unprofitable_audit"
GRAIN = "one row per client with a net loss over the scorecard window, biggest loss first"
KEY = ("client_id",)
PARTITION_BY = None
COST_COMPONENTS = ("communication_cost", "support_cost", "collection_cost", "bad_debt")
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "client_id": (pl.String(), "Client"),
    "name": m.CLIENT_NAME,
    "manager_id": (pl.String(), "Responsible manager"),
    "net_revenue": (m.MONEY, "Net revenue in the window"),
    "gross_margin": (m.MONEY, "Gross margin in the window"),
    "communication_cost": (m.MONEY, "Activity time cost"),
    "support_cost": (m.MONEY, "Ticket time cost"),
    "collection_cost": (m.MONEY, "Late payment financing cost"),
    "bad_debt": (m.MONEY, "Invoices written off"),
    "net_profit": (m.MONEY, "The loss (negative)"),
    "main_reason": (pl.String(), "The cost component that weighs most: communication_cost | support_cost | "
                                 "collection_cost | bad_debt | no_margin (no gross margin to cover anything)"),
    "main_reason_share": (pl.Float64(), "That component's share of the cost to serve"),
    "hours_spent": (pl.Float64(), "Hours our people spent on the client"),
    "avg_days_late": (pl.Float64(), "Average days late"),
    "revenue_last_3_months": (m.MONEY, "Net revenue of the last 3 months: what stopping would cost at once"),
}


def build(scorecard: pl.LazyFrame, client_month: pl.LazyFrame, *, as_of: dt.date) -> pl.LazyFrame:
    first, last = m.window_bounds(as_of, 3)
    recent = (client_month.filter(pl.col("month").is_between(first, last)).group_by("client_id")
              .agg(revenue_last_3_months=pl.col("net_revenue").sum().cast(m.MONEY)))
    costs = pl.concat_list([pl.col(c).cast(pl.Float64) for c in COST_COMPONENTS])
    largest = costs.list.arg_max()
    total_cost = costs.list.sum()
    return (
        scorecard.filter(pl.col("is_unprofitable"))
        .join(recent, on="client_id", how="left")
        .with_columns(
            main_reason=pl.when(total_cost <= 0).then(pl.lit("no_margin"))
            .otherwise(largest.replace_strict(dict(enumerate(COST_COMPONENTS)), return_dtype=pl.String)),
            main_reason_share=pl.when(total_cost > 0).then(costs.list.max() / total_cost),
            revenue_last_3_months=pl.col("revenue_last_3_months").fill_null(0).cast(m.MONEY),
        )
        .sort(["net_profit", "client_id"])
        .select(list(SCHEMA))
    )
