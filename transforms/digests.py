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


def where_repeating(frame: pl.LazyFrame, key: pl.Expr, name: str, value: pl.Expr, otherwise: bool | int
                    ) -> pl.LazyFrame:
    """``frame`` with column ``name``: ``value`` computed over the rows whose ``key`` (an expression over a row)
    has a hash another row of ``frame`` shares, ``otherwise`` (a literal) on the rest, in ``frame``'s row order.

    For a ``value`` that is ``otherwise`` wherever a row's key is unique (its window over the key, its first
    distinct, ...): equal keys have equal hashes, so the rows left out have unique keys, and the window or the
    distinct runs on the few rows that repeat instead of grouping every row (10M keys: 12-13 s for a window over
    all of them, a distinct over a struct of them ~1 GB more). The repeats are found on the sorted hashes
    (``is_duplicated`` took 2.2 s on 10M, this ~1 s).

    ``frame`` is read three times, each collected apart: the key's hashes (only the columns the key reads), the
    repeating rows' values, then the frame itself with the values set by position. So the returned plan reads
    ``frame`` once and streams when ``frame`` does (one plan reading it twice made polars hold all of it: a 30M
    invoice dump's staging peaked at 6.9 GB), and an in-memory ``frame``'s columns are not copied; collect an
    expensive ``frame`` first."""
    ordered = pl.col("_hash").sort()
    repeated = frame.select(_hash=key.hash()).select(ordered.filter(ordered == ordered.shift(1))).collect()
    positioned = frame.with_row_index("_position")
    values = (positioned.filter(key.hash().is_in(repeated["_hash"].implode()))
              .select("_position", value.alias(name)).collect())
    return positioned.with_columns(
        pl.col("_position").replace_strict(values["_position"], values[name], default=pl.lit(otherwise),
                                           return_dtype=values.schema[name]).alias(name)).drop("_position")
