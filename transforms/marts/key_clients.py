"""key_clients: the clients a unit depends on (DOMAIN §7).

Grain: one row per level (company | department | manager), unit and key client. A client is key in a unit
when it brings more than 10% (configurable) of the unit's net revenue over the scorecard window; at company
level the CRM flags (potential, reference, innovator, demanding) are further reasons. A client's department
is its manager's.
"""

from __future__ import annotations

import polars as pl

from transforms import metrics as m

NAME = "key_clients"
GRAIN = "one row per level (company | department | manager), unit and key client"
KEY = ("level", "unit", "client_id")
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "level": (pl.String(), "company | department | manager"),
    "unit": (pl.String(), "'company', the department, or the manager id"),
    "client_id": (pl.String(), "The key client"),
    "name": m.CLIENT_NAME,
    "net_revenue": (m.MONEY, "Its net revenue over the window"),
    "unit_share": (pl.Float64(), "Its share of the unit's net revenue"),
    "reasons": (pl.String(), "Why it is key: share > 10% | potential | reference | innovator | demanding"),
}
FLAGS = ("is_potential", "is_reference", "is_innovator", "is_demanding")


def units(scorecard: pl.LazyFrame, clients: pl.LazyFrame, managers: pl.LazyFrame) -> pl.LazyFrame:
    """client rows with their unit at each level: level, unit, client_id, name, net_revenue, unit_share."""
    base = (scorecard.select("client_id", "name", "net_revenue", "manager_id")
            .join(managers.select("manager_id", "department"), on="manager_id", how="left"))
    levels = pl.concat([
        base.with_columns(level=pl.lit("company"), unit=pl.lit("company")),
        base.filter(pl.col("department").is_not_null()).with_columns(level=pl.lit("department"),
                                                                       unit=pl.col("department")),
        base.filter(pl.col("manager_id").is_not_null()).with_columns(level=pl.lit("manager"),
                                                                       unit=pl.col("manager_id")),
    ])
    return levels.with_columns(
        unit_share=m.share_of_total("net_revenue", "level", "unit"),
    ).select("level", "unit", "client_id", "name", "net_revenue", "unit_share")


def reasons(share: pl.Expr, threshold: float, flags: list[str], flags_apply: pl.Expr | None = None) -> pl.Expr:
    """'share > 10% | reference | ...' — why a client is key; null when it is not (DOMAIN §7). ``flags_apply``
    limits where the CRM flags count (they are company-level reasons)."""
    flags_apply = pl.lit(True) if flags_apply is None else flags_apply
    parts = pl.concat_list([
        pl.when(share > threshold).then(pl.lit(f"share > {threshold:.0%}")),
        *(pl.when(pl.col(f).fill_null(False) & flags_apply).then(pl.lit(f.removeprefix("is_"))) for f in flags),
    ]).list.drop_nulls()
    return pl.when(parts.list.len() > 0).then(parts.list.join(" | "))


def build(unit_rows: pl.LazyFrame, clients: pl.LazyFrame, *, share: float = 0.10) -> pl.LazyFrame:
    """``unit_rows``: ``units()`` (shared with the dependency mart)."""
    flags = clients.select("client_id", *FLAGS)
    return (
        unit_rows.join(flags, on="client_id", how="left")
        .with_columns(reasons=reasons(pl.col("unit_share"), share, list(FLAGS), pl.col("level") == "company"))
        .filter(pl.col("reasons").is_not_null())
        .with_columns(pl.col("net_revenue").cast(m.MONEY))
        .select(list(SCHEMA))
        .sort(["level", "unit", "unit_share", "client_id"], descending=[False, False, True, False])
    )
