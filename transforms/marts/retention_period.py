"""retention_period: customer retention per month, quarter and year (DOMAIN §5).

Grain: one row per period (period_type month | quarter | year, period_start), for every full period between
the first payment and the as-of date. A client is active on a day if it paid within the activity window
(default 365 days) up to that day.
"""

from __future__ import annotations

import polars as pl

NAME = "retention_period"
GRAIN = "one row per full month, quarter and year between the first payment and as-of"
KEY = ("period_type", "period_start")
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "period_type": (pl.String(), "month | quarter | year"),
    "period_start": (pl.Date(), "First day of the period"),
    "period_end": (pl.Date(), "Last day of the period"),
    "clients_start": (pl.Int32(), "S: clients active at the start (end of the day before the period)"),
    "clients_end": (pl.Int32(), "E: clients active at the end of the period"),
    "new_clients": (pl.Int32(), "N: clients whose first ever payment falls in the period"),
    "churned": (pl.Int32(), "Active at the start, not at the end"),
    "reactivated": (pl.Int32(), "Won back: not new, not active at the start, active at the end"),
    "crr": (pl.Float64(), "Customer retention rate = (E - N) / S x 100"),
    "churn_rate": (pl.Float64(), "churned / S"),
    "net_revenue_retention": (pl.Float64(), "Net revenue (payments less refunds, at least 0 per client and "
                                            "period) of the S clients in the period / in the period before"),
    "gross_revenue_retention": (pl.Float64(), "Same, each client capped at its previous revenue"),
}


def build(retention: pl.LazyFrame) -> pl.LazyFrame:
    return retention.select(list(SCHEMA)).sort("period_type", "period_start")
