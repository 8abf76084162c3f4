"""Order-independent float aggregation: the same rows give the same bits whatever order they arrive in."""

import numpy as np
import polars as pl

from transforms import metrics as m


def test_float_sum_mean_and_std_do_not_depend_on_row_order():
    rng = np.random.default_rng(1)
    frame = pl.DataFrame({"g": rng.integers(0, 20, 50_000), "x": rng.random(50_000) * 1e6})
    results = set()
    for seed in range(6):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed).lazy()
        per_group = (shuffled.group_by("g").agg(s=m.fsum(pl.col("x")), mu=m.fmean(pl.col("x")), sd=m.fstd(pl.col("x")))
                     .sort("g").collect())
        total = shuffled.select(m.fsum(pl.col("x")), m.fsum(pl.col("x")).over("g").alias("w")).collect()
        results.add((per_group.to_numpy().tobytes(), total["x"][0], total["w"].sort().to_numpy().tobytes()))
    assert len(results) == 1
    expected = frame.group_by("g").agg(pl.col("x").sum(), pl.col("x").mean().alias("mu"),
                                       pl.col("x").std(ddof=0).alias("sd")).sort("g")
    per_group = frame.lazy().group_by("g").agg(s=m.fsum(pl.col("x")), mu=m.fmean(pl.col("x")),
                                                sd=m.fstd(pl.col("x"))).sort("g").collect()
    assert np.allclose(per_group["s"], expected["x"], rtol=1e-12)
    assert np.allclose(per_group["mu"], expected["mu"], rtol=1e-12)
    assert np.allclose(per_group["sd"], expected["sd"], rtol=1e-9)


def test_float_sum_of_nothing_is_zero_and_mean_is_null():
    empty = pl.DataFrame({"x": [None, None]}, schema={"x": pl.Float64})
    assert empty.select(m.fsum(pl.col("x")), m.fmean(pl.col("x")).alias("mu")).row(0) == (0.0, None)
