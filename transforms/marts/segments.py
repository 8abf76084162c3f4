"""segments: the prioritised segments and the team that owns each (DOMAIN §8.3-8.4).

Grain: one row per configured segment (in priority order) plus one for clients that meet no rule. Each client
belongs to the first segment whose rule it meets (``segments`` in config.yaml; a default set ships).
"""

from __future__ import annotations

import polars as pl

from transforms import metrics as m

NAME = "segments"
GRAIN = "one row per configured segment in priority order, plus 'unsegmented'"
KEY = ("priority",)
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "priority": (pl.Int32(), "1 = highest; the unsegmented row has the lowest"),
    "segment_name": (pl.String(), "Segment name from the configuration"),
    "team": (pl.String(), "upsell | win_back | new_business (null for unsegmented)"),
    "rule": (pl.String(), "The rule as configured"),
    "clients": (pl.Int32(), "Clients in the segment"),
    "net_revenue": (m.MONEY, "Their net revenue over the scorecard window"),
    "net_profit": (m.MONEY, "Their net profit over the scorecard window"),
    "revenue_last_12m": (m.MONEY, "Their net revenue of the last 12 months"),
}


def build(scorecard: pl.LazyFrame, segments: tuple) -> pl.LazyFrame:
    """``segments``: ordered (name, team, rule) triples, as given to the scorecard."""
    configured = pl.LazyFrame(
        [(i, name, team, rule) for i, (name, team, rule) in enumerate(segments, start=1)]
        + [(len(segments) + 1, "unsegmented", None, None)],
        schema={"priority": pl.Int32, "segment_name": pl.String, "team": pl.String, "rule": pl.String},
        orient="row")
    sums = (scorecard.with_columns(priority=pl.col("segment_id").fill_null(len(segments) + 1).cast(pl.Int32))
            .group_by("priority")
            .agg(clients=pl.len().cast(pl.Int32), net_revenue=pl.col("net_revenue").sum(),
                 net_profit=pl.col("net_profit").sum(), revenue_last_12m=pl.col("revenue_last_12m").sum()))
    return (
        configured.join(sums, on="priority", how="left")
        .with_columns(pl.col("clients").fill_null(0),
                      *(pl.col(c).fill_null(0).cast(m.MONEY) for c in ("net_revenue", "net_profit", "revenue_last_12m")))
        .select(list(SCHEMA))
        .sort("priority")
    )
