"""manager_load: key clients per manager — at most 3 is the rule (DOMAIN §7).

Grain: one row per manager with at least one client.
"""

from __future__ import annotations

import polars as pl

from transforms import metrics as m

NAME = "manager_load"
GRAIN = "one row per manager with at least one client"
KEY = ("manager_id",)
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "manager_id": (pl.String(), "Manager"),
    "department": (pl.String(), "The manager's department"),
    "clients": (pl.Int32(), "Clients the manager is responsible for"),
    "key_clients": (pl.Int32(), "Of those, key clients of the company"),
    "net_revenue": (m.MONEY, "Net revenue of the manager's clients over the window"),
    "is_overloaded": (pl.Boolean(), "More key clients than the limit (default 3)"),
}


def build(scorecard: pl.LazyFrame, key: pl.LazyFrame, managers: pl.LazyFrame, *, limit: int = 3) -> pl.LazyFrame:
    company_key = key.filter(pl.col("level") == "company").select("client_id").unique().with_columns(_key=pl.lit(True))
    return (
        scorecard.filter(pl.col("manager_id").is_not_null()).select("client_id", "manager_id", "net_revenue")
        .join(company_key, on="client_id", how="left")
        .group_by("manager_id")
        .agg(clients=pl.len().cast(pl.Int32), key_clients=pl.col("_key").fill_null(False).sum().cast(pl.Int32),
             net_revenue=pl.col("net_revenue").sum().cast(m.MONEY))
        .join(managers.select("manager_id", "department"), on="manager_id", how="left")
        .with_columns(is_overloaded=pl.col("key_clients") > limit)
        .select(list(SCHEMA))
        .sort("manager_id")
    )
