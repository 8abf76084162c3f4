"""abc_xyz_matrix: size (ABC by revenue) against regularity (XYZ) — nine cells (DOMAIN §4).

Grain: one row per cell AX .. CZ (always nine rows). Clients in D (no revenue) or without an XYZ class
(fewer than 3 months) are in no cell.
"""

from __future__ import annotations

import polars as pl

from transforms import metrics as m

NAME = "abc_xyz_matrix"
GRAIN = "one row per ABC x XYZ cell (nine rows: AX .. CZ)"
KEY = ("abc", "xyz")
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "abc": (pl.String(), "A | B | C (by net revenue)"),
    "xyz": (pl.String(), "X (CV <= 0.10) | Y (<= 0.25) | Z (above)"),
    "cell": (pl.String(), "abc + xyz, e.g. AX = large and steady"),
    "clients": (pl.Int32(), "Clients in the cell"),
    "net_revenue": (m.MONEY, "Their net revenue over the scorecard window"),
    "net_profit": (m.MONEY, "Their net profit over the scorecard window"),
}


def build(scorecard: pl.LazyFrame) -> pl.LazyFrame:
    cells = pl.LazyFrame({"abc": list("AAABBBCCC"), "xyz": list("XYZXYZXYZ")})
    sums = (scorecard.filter(pl.col("abc_xyz").is_not_null())
            .group_by(pl.col("abc_revenue").alias("abc"), "xyz")
            .agg(clients=pl.len().cast(pl.Int32), net_revenue=pl.col("net_revenue").sum(),
                 net_profit=pl.col("net_profit").sum()))
    return (
        cells.join(sums, on=["abc", "xyz"], how="left")
        .with_columns(cell=pl.col("abc") + pl.col("xyz"), clients=pl.col("clients").fill_null(0),
                      net_revenue=pl.col("net_revenue").fill_null(0).cast(m.MONEY),
                      net_profit=pl.col("net_profit").fill_null(0).cast(m.MONEY))
        .select(list(SCHEMA))
        .sort("abc", "xyz")
    )
