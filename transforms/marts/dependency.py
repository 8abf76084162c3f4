"""dependency: how much each unit depends on its largest client (DOMAIN §7).

Grain: one row per level (company | department | manager) and unit. Top client above 20% of the unit's net
revenue: diversify; above 40%: severe; above 50%: critical dependency (thresholds configurable).
"""

from __future__ import annotations

import polars as pl

from transforms import metrics as m

NAME = "dependency"
GRAIN = "one row per level (company | department | manager) and unit"
KEY = ("level", "unit")
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "level": (pl.String(), "company | department | manager"),
    "unit": (pl.String(), "'company', the department, or the manager id"),
    "clients": (pl.Int32(), "Clients of the unit"),
    "net_revenue": (m.MONEY, "The unit's net revenue over the window"),
    "top_client_id": (pl.String(), "Its largest client"),
    "top_client_share": (pl.Float64(), "That client's share of the unit's net revenue"),
    "dependency_level": (pl.String(), "ok | diversify (> 20%) | severe (> 40%) | critical (> 50%)"),
}


def level_of(share: pl.Expr, diversify: float, severe: float, critical: float) -> pl.Expr:
    return (pl.when(share > critical).then(pl.lit("critical"))
            .when(share > severe).then(pl.lit("severe"))
            .when(share > diversify).then(pl.lit("diversify"))
            .otherwise(pl.lit("ok")))


def build(unit_rows: pl.LazyFrame, *, diversify: float = 0.20, severe: float = 0.40,
          critical: float = 0.50) -> pl.LazyFrame:
    """``unit_rows``: key_clients.units()."""
    return (
        unit_rows.sort(["unit_share", "client_id"], descending=[True, False])
        .group_by("level", "unit", maintain_order=True)
        .agg(clients=pl.len().cast(pl.Int32), net_revenue=pl.col("net_revenue").sum().cast(m.MONEY),
             top_client_id=pl.col("client_id").first(), top_client_share=pl.col("unit_share").first())
        .with_columns(dependency_level=level_of(pl.col("top_client_share"), diversify, severe, critical))
        .select(list(SCHEMA))
        .sort("level", "unit")
    )
