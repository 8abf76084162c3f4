import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import digests


@given(keys=st.lists(st.none() | st.integers(0, 6), max_size=25), wide=st.integers(7, 10_000))
@settings(max_examples=100, deadline=None)
def test_where_repeating_equals_the_value_over_every_row(keys, wide):
    """A value that is the default wherever a row's key is unique (first of its key, number within it) comes out
    as computed over every row, whether few keys repeat or many; null keys are one key, as for polars."""
    frame = pl.LazyFrame({"k": keys, "n": range(len(keys))}, schema={"k": pl.Int64, "n": pl.Int64})
    frame = pl.concat([frame, pl.LazyFrame({"k": [wide], "n": [len(keys)]})])  # one key found once
    for name, value, otherwise in (("first", pl.col("k").is_first_distinct(), True),
                                   ("number", pl.int_range(pl.len()).over("k", order_by="n"), 0)):
        got = digests.where_repeating(frame, pl.col("k"), name, value, otherwise).collect()
        expected = frame.with_columns(value.alias(name)).collect()
        assert got.equals(expected, null_equal=True), name
    assert digests.where_repeating(frame, pl.col("k"), "x", pl.lit(1), 0).collect()["x"].to_list()[-1] == 0
