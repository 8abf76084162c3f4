"""target_portrait: what our A clients have in common (DOMAIN §8.1).

Grain: one row per client attribute (industry, size band, region, acquisition channel) and value, sorted by
lift, so the top of the table reads as "what our A clients have in common". Lift = share among A clients /
share among all clients (above 1: typical of A clients).
"""

from __future__ import annotations

import polars as pl

NAME = "target_portrait"
GRAIN = "one row per client attribute and value (attributes: industry, size_band, region, acquisition_channel)"
KEY = ("attribute", "value")
PARTITION_BY = None
ATTRIBUTES = ("industry", "size_band", "region", "acquisition_channel")
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "attribute": (pl.String(), "industry | size_band | region | acquisition_channel"),
    "value": (pl.String(), "The attribute's value ('(unknown)' when the CRM has none)"),
    "clients_a": (pl.Int32(), "A clients (by revenue) with this value"),
    "clients_all": (pl.Int32(), "All clients with this value"),
    "share_a": (pl.Float64(), "Share among A clients"),
    "share_all": (pl.Float64(), "Share among all clients"),
    "lift": (pl.Float64(), "share_a / share_all"),
}


def build(scorecard: pl.LazyFrame, clients: pl.LazyFrame) -> pl.LazyFrame:
    base = scorecard.select("client_id", "abc_revenue").join(clients.select("client_id", *ATTRIBUTES),
                                                              on="client_id", how="left")
    long = pl.concat([
        base.select(pl.lit(a).alias("attribute"), pl.col(a).fill_null("(unknown)").alias("value"),
                    (pl.col("abc_revenue") == "A").alias("_a"))
        for a in ATTRIBUTES
    ])
    return (
        long.group_by("attribute", "value")
        .agg(clients_a=pl.col("_a").sum().cast(pl.Int32), clients_all=pl.len().cast(pl.Int32))
        .with_columns(share_a=pl.col("clients_a") / pl.col("clients_a").sum().over("attribute"),
                      share_all=pl.col("clients_all") / pl.col("clients_all").sum().over("attribute"))
        .with_columns(lift=pl.when(pl.col("share_all") > 0).then(pl.col("share_a") / pl.col("share_all")))
        .select(list(SCHEMA))
        .sort(["lift", "clients_a", "attribute", "value"], descending=[True, True, False, False], nulls_last=True)
    )
