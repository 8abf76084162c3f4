"""Order-independent float aggregation: the same rows give the same bits whatever order they arrive in."""

import numpy as np
import polars as pl

from transforms import metrics as m


def test_float_sum_and_mean_do_not_depend_on_row_order():
    rng = np.random.default_rng(1)
    frame = pl.DataFrame({"g": rng.integers(0, 20, 50_000), "x": rng.random(50_000) * 1e6})
    results = set()
    for seed in range(6):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed).lazy()
        per_group = (shuffled.group_by("g").agg(s=m.fsum(pl.col("x")), mu=m.fmean(pl.col("x")))
                     .sort("g").collect())
        total = shuffled.select(m.fsum(pl.col("x")), m.fsum(pl.col("x")).over("g").alias("w")).collect()
        results.add((per_group.to_numpy().tobytes(), total["x"][0], total["w"].sort().to_numpy().tobytes()))
    assert len(results) == 1
    expected = frame.group_by("g").agg(pl.col("x").sum(), pl.col("x").mean().alias("mu")).sort("g")
    per_group = frame.lazy().group_by("g").agg(s=m.fsum(pl.col("x")), mu=m.fmean(pl.col("x"))).sort("g").collect()
    assert np.allclose(per_group["s"], expected["x"], rtol=1e-12)
    assert np.allclose(per_group["mu"], expected["mu"], rtol=1e-12)


def test_float_sum_is_the_exact_sum_of_the_values():
    """1e16 + 1 - 1e16 is 0 or 1 in float depending on the order; the fixed-point sum gives 1 in every order."""
    for values in ([1e16, 1.0, -1e16], [1.0, -1e16, 1e16], [-1e16, 1e16, 1.0]):
        frame = pl.DataFrame({"g": [1, 1, 1], "x": values})
        assert frame.select(m.fsum(pl.col("x"))).item() == 1.0
        assert frame.group_by("g").agg(m.fsum(pl.col("x")))["x"].to_list() == [1.0]
    tiny = pl.DataFrame({"x": [0.25, 0.5, 2.0**-60]})  # below 2^-52 is rounded away
    assert tiny.select(m.fsum(pl.col("x"))).item() == 0.75


def test_float_sum_of_nothing_is_zero_and_mean_is_null():
    empty = pl.DataFrame({"x": [None, None]}, schema={"x": pl.Float64})
    assert empty.select(m.fsum(pl.col("x")), m.fmean(pl.col("x")).alias("mu")).row(0) == (0.0, None)


def test_money_shares_come_from_exact_cent_sums():
    """Shares of a total, Gini and HHI: bit-identical whatever the row order, and exact on simple numbers."""
    rng = np.random.default_rng(2)
    money = pl.Series("v", rng.integers(-10_000, 10_000_000, 20_000)).cast(pl.Decimal(18, 2)) / 100
    frame = pl.DataFrame({"client_id": [f"C{i}" for i in range(money.len())], "v": money})
    results = set()
    for seed in range(4):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
        shares = shuffled.with_columns(s=m.share_of_total("v")).sort("client_id")["s"].to_numpy().tobytes()
        ranked = shuffled.sort(*m.rank_order("v")[:1], descending=True).sort(["v", "client_id"],
                                                                              descending=[True, False])
        results.add((shares, ranked.select(m.gini("v"), m.hhi("v").alias("h")).row(0)))
    assert len(results) == 1
    small = pl.DataFrame({"client_id": ["a", "b", "c"], "v": ["30.00", "10.00", "-5.00"]}).with_columns(
        pl.col("v").cast(pl.Decimal(18, 2)))
    assert small.select(m.share_of_total("v"))["v"].to_list() == [0.75, 0.25, 0.0]
    assert small.select(m.hhi("v")).item() == (0.75 ** 2 + 0.25 ** 2)
