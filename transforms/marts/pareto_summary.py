"""pareto_summary: how concentrated revenue and profit are (DOMAIN §2-3).

Grain: one row per measure (net revenue, net profit) as of the run date, over the scorecard window.
Concentration figures use the positive parts of the measure (a loss is no share of profit).
"""

from __future__ import annotations

import polars as pl

from transforms import metrics as m

NAME = "pareto_summary"
GRAIN = "one row per measure (revenue, profit) as of the run date, over the scorecard window"
KEY = ("measure",)
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "as_of": (pl.Date(), "Run date"),
    "measure": (pl.String(), "revenue (net revenue) | profit (net profit)"),
    "clients": (pl.Int32(), "Clients with the measure (non-zero) in the window: the clients the shares below are of"),
    "total": (m.MONEY, "Sum of the measure over all clients"),
    "top_fraction": (pl.Float64(), "The 'top clients' fraction used (default 0.20)"),
    "top_share": (pl.Float64(), "Share of the positive total earned by the top fraction of clients"),
    "reach": (pl.Float64(), "The share of the total clients_share_to_reach is for (default 0.80)"),
    "clients_share_to_reach": (pl.Float64(), "Smallest share of clients (largest first) whose measure reaches "
                                             "reach x the total"),
    "gini": (pl.Float64(), "Gini coefficient (0 = all equal, 1 = one client has everything)"),
    "hhi": (pl.Float64(), "Herfindahl-Hirschman index as a fraction (x 10,000 for points)"),
    "top1_share": (pl.Float64(), "Share of the largest client"),
    "top5_share": (pl.Float64(), "Share of the five largest"),
    "top10_share": (pl.Float64(), "Share of the ten largest"),
    "clients_a": (pl.Int32(), "Clients in category A"),
    "clients_b": (pl.Int32(), "Clients in category B"),
    "clients_c": (pl.Int32(), "Clients in category C"),
    "clients_d": (pl.Int32(), "Clients in category D (no revenue / no profit)"),
    "reporting_currency": (pl.String(), "ISO 4217 code of total"),
}


def build(scorecard: pl.LazyFrame, *, top_fraction: float = 0.20, reach: float = 0.80) -> pl.LazyFrame:
    # One row per client: small. Sorted eagerly because the concentration measures read the rows in rank
    # order, and polars 2.1's lazy engine was seen to lose a two-key sort ahead of an order-dependent
    # aggregation (tests/test_economics.py::test_seed_000_twenty_of_hundred_bring_eighty_percent).
    scorecard = scorecard.collect()
    rows = []
    for measure, column, abc in (("revenue", "net_revenue", "abc_revenue"), ("profit", "net_profit", "abc_profit")):
        keys, descending = m.rank_order(column)
        ranked = scorecard.sort(keys, descending=descending)
        # the shares are among the clients with the measure in the window: a CRM lead that never bought (and
        # took no time) is not one of the clients "20% of clients" speaks of
        rows.append(pl.concat([ranked.select(
            pl.col("as_of").first(), pl.lit(measure).alias("measure"),
            pl.col(column).sum().cast(m.MONEY).alias("total"), pl.lit(top_fraction).alias("top_fraction"),
            pl.lit(reach).alias("reach"),
            *((pl.col(abc) == c).sum().cast(pl.Int32).alias(f"clients_{c.lower()}") for c in "ABCD"),
            pl.col("reporting_currency").first(),
        ), ranked.filter(pl.col(column) != 0).select(
            pl.len().cast(pl.Int32).alias("clients"),
            m.top_share(column, top_fraction).alias("top_share"),
            m.clients_share_for(column, reach).alias("clients_share_to_reach"),
            m.gini(column).alias("gini"), m.hhi(column).alias("hhi"),
            m.top_n_share(column, 1).alias("top1_share"), m.top_n_share(column, 5).alias("top5_share"),
            m.top_n_share(column, 10).alias("top10_share"),
        )], how="horizontal"))
    return pl.concat(rows).select(list(SCHEMA)).lazy()
