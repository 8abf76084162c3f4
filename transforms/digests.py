"""Order-free digests of sets of rows: what tells a run which parts of its inputs changed since the last one.

A digest is the row count and two sums of 64-bit row hashes (different seeds), taken as integers. A sum does not
depend on row order, so it is the digest of the rows as a multiset: nothing needs sorting before it is compared
with the digest the previous run stored. Any change of a value changes its row's hashes and so, but for a chance
of about 2^-64 per sum, the sums. polars keeps its hash stable within one version, so whoever stores a digest
stores the polars version with it.
"""

from __future__ import annotations

import polars as pl


def row_hash_sums(columns: pl.Expr) -> list[pl.Expr]:
    """``_n`` (rows), ``_h1`` and ``_h2`` (Int128 sums of the rows' hashes with seeds 1 and 2) of ``columns``."""
    rows = pl.struct(columns)
    return [pl.len().alias("_n"), *(rows.hash(seed).cast(pl.Int128).sum().alias(f"_h{seed}") for seed in (1, 2))]


def by_key(frame: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """One row per ``key`` value: the digest of its rows' other columns."""
    return frame.group_by(key).agg(*row_hash_sums(pl.all().exclude(key)))
