import polars as pl
import pytest

from transforms.rules import RuleError, compile_rule

FRAME = pl.DataFrame({
    "abc_revenue": ["A", "A", "B", "C", None], "tenure_years": [6.0, 2.0, 8.0, 1.0, None],
    "is_growing": [True, True, False, None, True], "industry": ["transport", "retail", "transport", None, "it"],
    "satisfaction": [9.0, 8.0, None, 3.0, 10.0],
})
COLUMNS = FRAME.columns


def matches(rule: str) -> list[bool]:
    return FRAME.select(compile_rule(rule, COLUMNS)).to_series().to_list()


def test_the_seed_example_rule():
    rule = "abc_revenue == 'A' and tenure_years > 5 and is_growing and satisfaction >= 8 and industry in ['transport']"
    assert matches(rule) == [True, False, False, False, False]


@pytest.mark.parametrize(("rule", "expected"), [
    ("abc_revenue in ['A', 'B'] or industry == 'it'", [True, True, True, False, True]),
    ("not is_growing", [False, False, True, True, False]),  # null counts as not matching, so 'not' is true
    ("industry == None", [False, False, False, True, False]),
    ("industry != None and tenure_years <= 2", [False, True, False, False, False]),
    ("satisfaction < -1", [False] * 5),
    ("abc_revenue not in ['A']", [False, False, True, True, True]),  # a missing class is not 'A'
    ("not abc_revenue in ['A']", [False, False, True, True, True]),
    ("industry != 'transport'", [False, True, False, True, True]),  # unknown industry: not transport
    ("not industry == 'transport'", [False, True, False, True, True]),
    ("satisfaction >= 8", [True, True, False, False, True]),  # a missing score is not >= 8 ...
    ("not satisfaction >= 8", [False, False, True, True, False]),  # ... so it is 'not >= 8'
])
def test_language(rule, expected):
    assert matches(rule) == expected


@pytest.mark.parametrize(("rule", "message"), [
    ("revenue > 5", "unknown column 'revenue'"),
    ("__import__('os').system('rm -rf /')", "is not allowed"),
    ("abc_revenue.lower() == 'a'", "expected a column name"),
    ("tenure_years + 1 > 5", "expected a column name"),
    ("industry in 'transport'", "'in' needs a list"),
    ("1 < tenure_years < 5", "chained comparisons"),
    ("abc_revenue == ", "not a valid expression"),
    ("industry == other_column", "expected a constant"),
])
def test_refused_rules_say_why(rule, message):
    with pytest.raises(RuleError, match=message):
        compile_rule(rule, COLUMNS)


def test_each_client_gets_the_first_segment_it_meets():
    from transforms.marts.client_scorecard import assign_segments

    card = pl.DataFrame({"abc_revenue": ["A", "B", "C"], "is_growing": [True, True, False]})
    out = assign_segments(card, (("Growing A", "upsell", "abc_revenue == 'A' and is_growing"),
                                 ("Growing", "upsell", "is_growing"),
                                 ("A or B", "win_back", "abc_revenue in ['A', 'B']")))
    assert out.select("segment_id", "segment_name", "team").rows() == [
        (1, "Growing A", "upsell"), (2, "Growing", "upsell"), (None, None, None)]
