"""whale_curve: cumulative profit against clients ranked by profit (DOMAIN §3).

Grain: one row per client, ranked by net profit over the scorecard window (largest first). The curve rises
with the profitable clients, peaks, and falls as the loss-makers give profit back; ``is_peak`` marks the top.
"""

from __future__ import annotations

import polars as pl

from transforms import metrics as m

NAME = "whale_curve"
GRAIN = "one row per client ranked by net profit over the scorecard window, largest first"
KEY = ("profit_rank",)
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "profit_rank": (pl.Int32(), "1 = most profitable client"),
    "client_id": (pl.String(), "Client"),
    "net_profit": (m.MONEY, "The client's net profit"),
    "cumulative_profit": (m.MONEY, "Net profit of this client and all above it"),
    "cumulative_client_share": (pl.Float64(), "profit_rank / number of clients"),
    "cumulative_profit_share": (pl.Float64(), "cumulative_profit / total net profit (peaks above 1 when "
                                              "loss-makers give profit back)"),
    "is_peak": (pl.Boolean(), "The point of maximum cumulative profit"),
}


def build(scorecard: pl.LazyFrame) -> pl.LazyFrame:
    keys, descending = m.rank_order("net_profit")
    total = m.fsum(pl.col("net_profit").cast(pl.Float64))
    return (  # eager: one row per client, and the running sum needs the rank order
        scorecard.select("client_id", "net_profit").collect().sort(keys, descending=descending)
        .with_columns(profit_rank=pl.int_range(1, pl.len() + 1).cast(pl.Int32),
                      cumulative_profit=pl.col("net_profit").cum_sum().cast(m.MONEY))
        .with_columns(
            cumulative_client_share=pl.col("profit_rank") / pl.len(),
            cumulative_profit_share=pl.when(total != 0).then(pl.col("cumulative_profit").cast(pl.Float64) / total),
            is_peak=pl.int_range(pl.len()) == pl.col("cumulative_profit").arg_max(),
        )
        .select(list(SCHEMA))
        .lazy()
    )
