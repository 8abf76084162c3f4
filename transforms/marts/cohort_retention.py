"""cohort_retention: first-purchase-month cohorts and how many of them keep buying (DOMAIN §5).

Grain: one row per cohort month (month of the first ever payment) and months since it, for months in which
at least one member of the cohort paid.
"""

from __future__ import annotations

import polars as pl

from transforms import metrics as m

NAME = "cohort_retention"
GRAIN = "one row per first-purchase cohort month and months since, where a member of the cohort paid"
KEY = ("cohort_month", "months_since")
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "cohort_month": (pl.Date(), "Month of the first ever payment"),
    "months_since": (pl.Int32(), "0 = the cohort month itself"),
    "cohort_size": (pl.Int32(), "Clients in the cohort"),
    "active_clients": (pl.Int32(), "Cohort members who paid in that month"),
    "retention_rate": (pl.Float64(), "active_clients / cohort_size"),
    "revenue": (m.MONEY, "Net revenue of the cohort in that month"),
}


def build(cohorts: pl.LazyFrame) -> pl.LazyFrame:
    return cohorts.select(list(SCHEMA))
