"""XYZ, retention and cohorts on tiny hand-computed cases (DOMAIN §4-5)."""

import datetime as dt
import itertools
import random
import statistics
from decimal import Decimal

import polars as pl
import pytest

from clientbase.config import BehaviourConfig
from transforms import behaviour
from transforms import metrics as m
from transforms.marts import abc_xyz_matrix


def months(rows):
    return pl.DataFrame(rows, schema={"client_id": pl.String, "month": pl.Date, "net_revenue": pl.Float64,
                                      "revenue": pl.Float64}, orient="row").lazy()


FIRST = pl.LazyFrame({"client_id": ["steady", "wobbly", "new", "late"],
                      "first_payment": [dt.date(2020, 5, 3), dt.date(2020, 5, 3), dt.date(2025, 5, 10),
                                        dt.date(2025, 4, 2)]})
WINDOW = (dt.date(2025, 1, 1), dt.date(2025, 6, 1))


def test_xyz_from_the_monthly_coefficient_of_variation():
    data = months(
        [("steady", dt.date(2025, i, 1), 100.0, 100.0) for i in range(1, 7)]
        + [("wobbly", dt.date(2025, i, 1), v, v) for i, v in zip(range(1, 7), [100, 120, 80, 100, 120, 80],
                                                                strict=True)]
        + [("new", dt.date(2025, 5, 1), 50.0, 50.0), ("new", dt.date(2025, 6, 1), 50.0, 50.0)]
        + [("late", dt.date(2025, 4, 1), 90.0, 90.0), ("late", dt.date(2025, 6, 1), 30.0, 30.0)]
        # rows that do not count: before the first purchase's month (a cost), outside the window, a client that
        # never paid, one whose first payment is after the window
        + [("late", dt.date(2025, 3, 1), -20.0, 0.0), ("late", dt.date(2025, 7, 1), 500.0, 500.0),
           ("steady", dt.date(2024, 12, 1), 900.0, 900.0), ("costs only", dt.date(2025, 2, 1), -5.0, 0.0),
           ("later", dt.date(2025, 7, 1), 10.0, 10.0)]
    )
    first = pl.concat([FIRST, pl.LazyFrame({"client_id": ["later"], "first_payment": [dt.date(2025, 7, 3)]})])
    out = {r["client_id"]: r for r in behaviour.xyz(data, first, window=WINDOW).collect().iter_rows(named=True)}
    assert set(out) == {"steady", "wobbly", "new", "late"}
    assert (out["steady"]["xyz"], out["steady"]["revenue_cv"]) == ("X", 0.0)
    # mean 100, population std sqrt((0+400+400+0+400+400)/6) = 16.33: CV 0.163 -> Y
    assert out["wobbly"]["revenue_cv"] == pytest.approx(16.3299 / 100, rel=1e-4)
    assert out["wobbly"]["xyz"] == "Y"
    # only two months since the first purchase: no class, not a guess
    assert (out["new"]["xyz_months"], out["new"]["xyz"]) == (2, None)
    # April-June with May at 0: values 90, 0, 30 -> mean 40, std 37.42 -> CV 0.935 -> Z
    assert (out["late"]["xyz_months"], out["late"]["xyz"]) == (3, "Z")
    assert out["late"]["revenue_cv"] == pytest.approx(37.4166 / 40, rel=1e-4)


PAYMENTS = pl.LazyFrame({
    "client_id": ["a", "a", "b", "c", "c"],
    "booking_date": [dt.date(2024, 1, 10), dt.date(2024, 6, 1), dt.date(2024, 2, 5), dt.date(2023, 1, 1),
                     dt.date(2024, 12, 20)],
    "amount_reporting": [100.0, 50.0, 70.0, 10.0, 30.0]})


def test_crr_churn_and_won_back_per_period():
    frame = behaviour.retention(PAYMENTS, behaviour.periods(dt.date(2024, 1, 1), dt.date(2024, 12, 1)),
                                window_days=365).collect()
    row = {(r["period_type"], r["period_start"]): r for r in frame.iter_rows(named=True)}
    year = row[("year", dt.date(2024, 1, 1))]
    # S: c (paid 364 days before); E: a, b, c; N: a, b -> CRR = (3 - 2) / 1 x 100
    assert (year["clients_start"], year["clients_end"], year["new_clients"], year["crr"]) == (1, 3, 2, 100.0)
    assert (year["net_revenue_retention"], year["gross_revenue_retention"]) == (3.0, 1.0)  # c: 30 vs 10
    q1 = row[("quarter", dt.date(2024, 1, 1))]
    assert (q1["clients_start"], q1["clients_end"], q1["churned"], q1["crr"], q1["churn_rate"]) == (1, 2, 1, 0.0, 1.0)
    q4 = row[("quarter", dt.date(2024, 10, 1))]
    # a and b still active; c comes back in December after 20 months: won back
    assert (q4["clients_start"], q4["clients_end"], q4["reactivated"], q4["crr"]) == (2, 3, 1, 150.0)
    assert len([k for k in row if k[0] == "month"]) == 12


def test_cohorts_by_first_purchase_month():
    data = months([("a", dt.date(2024, 1, 1), 100.0, 100.0), ("a", dt.date(2024, 3, 1), 40.0, 40.0),
                   ("b", dt.date(2024, 1, 1), 10.0, 10.0), ("c", dt.date(2024, 2, 1), 5.0, 5.0)])
    first = pl.LazyFrame({"client_id": ["a", "b", "c"],
                          "first_payment": [dt.date(2024, 1, 3), dt.date(2024, 1, 20), dt.date(2024, 2, 2)]})
    out = behaviour.cohorts(data, first).collect()
    assert out.rows() == [
        (dt.date(2024, 1, 1), 0, 2, 2, 1.0, Decimal("110.00")),
        (dt.date(2024, 1, 1), 2, 2, 1, 0.5, Decimal("40.00")),
        (dt.date(2024, 2, 1), 0, 1, 1, 1.0, Decimal("5.00")),
    ]


def test_matrix_always_has_nine_cells():
    card = pl.LazyFrame({"abc_revenue": ["A", "A", "C", "D"], "xyz": ["X", "X", "Z", None],
                         "abc_xyz": ["AX", "AX", "CZ", None],
                         "net_revenue": [Decimal("10"), Decimal("5"), Decimal("1"), Decimal("0")],
                         "net_profit": [Decimal("3"), Decimal("1"), Decimal("-1"), Decimal("0")]},
                        schema_overrides={"net_revenue": m.MONEY, "net_profit": m.MONEY})
    out = abc_xyz_matrix.build(card).collect()
    assert out["cell"].to_list() == ["AX", "AY", "AZ", "BX", "BY", "BZ", "CX", "CY", "CZ"]
    assert out.filter(pl.col("cell") == "AX").select("clients", "net_revenue").row(0) == (2, Decimal("15.00"))
    assert out["clients"].sum() == 3


def test_at_risk_is_silent_much_longer_than_its_own_cadence():
    pays = pl.LazyFrame({
        "client_id": ["monthly"] * 4 + ["quarterly"] * 3 + ["lost"] * 3 + ["twice"] * 2,
        "booking_date": [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1), dt.date(2025, 4, 1),
                         dt.date(2024, 10, 1), dt.date(2025, 1, 1), dt.date(2025, 4, 1),
                         dt.date(2023, 1, 1), dt.date(2023, 2, 1), dt.date(2023, 3, 1),
                         dt.date(2025, 1, 1), dt.date(2025, 4, 1)],
        "amount_reporting": [1.0] * 12})
    out = {r["client_id"]: r for r in behaviour.activity(pays, as_of=dt.date(2025, 6, 30), at_risk_factor=2.0,
                                                         window_days=365).collect().iter_rows(named=True)}
    # monthly payer silent 90 days (> 2 x 31): slipping
    assert (out["monthly"]["usual_gap_days"], out["monthly"]["days_since_last_payment"],
            out["monthly"]["is_at_risk"]) == (31.0, 90, True)
    # quarterly payer silent 90 days: its normal rhythm
    assert (out["quarterly"]["usual_gap_days"], out["quarterly"]["is_at_risk"]) == (91.0, False)  # 92, 90 days
    # silent for two years: lost, not "at risk"; two payments: no usual gap yet
    assert out["lost"]["is_at_risk"] is False
    assert (out["twice"]["usual_gap_days"], out["twice"]["is_at_risk"]) == (None, False)


def test_activity_takes_each_payment_day_once_up_to_as_of():
    """Against a plain reading of DOMAIN §5 on random payments summed per day (``daily_payments``, as the marts
    step reads them): several payments on a day are one payment day, days after as-of do not count, the usual gap
    is the median of the gaps between consecutive days."""
    rng = random.Random(11)
    as_of = dt.date(2025, 6, 30)
    rows = [(f"c{rng.randrange(40)}", dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(600)), 1.0)
            for _ in range(900)]
    rows += rows[:150]  # the same client paying again on the same day
    rows += [("few", dt.date(2025, 1, 5), 1.0), ("few", dt.date(2025, 1, 5), 2.0), ("few", dt.date(2025, 3, 5), 1.0),
             ("few", dt.date(2025, 7, 5), 1.0)]  # two payment days up to as-of: no usual gap
    rng.shuffle(rows)
    pays = pl.LazyFrame(rows, schema={"client_id": pl.String, "booking_date": pl.Date, "amount_reporting": pl.Float64},
                        orient="row")
    out = behaviour.activity(behaviour.daily_payments(pays), as_of=as_of, at_risk_factor=2.0,
                             window_days=365).collect()
    expected = {}
    for client in sorted({c for c, d, _ in rows if d <= as_of}):
        days = sorted({d for c, d, _ in rows if c == client and d <= as_of})
        gaps = [(b - a).days for a, b in itertools.pairwise(days)]
        expected[client] = (days[-1], (as_of - days[-1]).days, statistics.median(gaps) if len(days) >= 3 else None)
    assert len(expected) == 41 and expected["few"] == (dt.date(2025, 3, 5), 117, None)
    assert {r["client_id"]: (r["last_payment_date"], r["days_since_last_payment"], r["usual_gap_days"])
            for r in out.iter_rows(named=True)} == expected


def test_at_risk_by_default_is_beyond_the_usual_gap():
    """DOMAIN §5: days since the last payment beyond the client's usual gap (the default factor 1)."""
    pays = pl.LazyFrame({"client_id": ["c"] * 3, "booking_date": [dt.date(2024, 1, 1), dt.date(2024, 1, 31),
                                                                  dt.date(2024, 3, 1)], "amount_reporting": [1.0] * 3})
    factor = BehaviourConfig().at_risk_factor
    risk = {days: behaviour.activity(pays, as_of=dt.date(2024, 3, 1) + dt.timedelta(days=days),
                                     at_risk_factor=factor, window_days=365).collect()["is_at_risk"].item()
            for days in (30, 31, 45)}
    assert (factor, risk) == (1.0, {30: False, 31: True, 45: True})  # usual gap 30 days
    assert not behaviour.activity(pays, as_of=dt.date(2024, 4, 15), at_risk_factor=2.0,
                                  window_days=365).collect()["is_at_risk"].item()  # a quieter list: 45 <= 60


def test_turnover_trend_compares_the_last_twelve_months_with_the_twelve_before():
    data = months([("up", dt.date(2024, 3, 1), 10.0, 10.0), ("up", dt.date(2025, 3, 1), 30.0, 30.0),
                   ("down", dt.date(2024, 6, 1), 50.0, 50.0), ("down", dt.date(2025, 6, 1), 20.0, 20.0),
                   ("old", dt.date(2023, 6, 1), 99.0, 99.0)])
    out = {r[0]: r[1:] for r in behaviour.turnover_trend(data.with_columns(pl.col("net_revenue").cast(m.MONEY)),
                                                         as_of=dt.date(2025, 6, 30)).collect().rows()}
    assert out["up"] == (Decimal("30.00"), Decimal("10.00"), True)
    assert out["down"] == (Decimal("20.00"), Decimal("50.00"), False)
    assert out["old"] == (Decimal("0.00"), Decimal("0.00"), False)


def test_key_clients_dependency_and_manager_load():
    from transforms.marts import dependency, key_clients, manager_load

    card = pl.LazyFrame({
        "client_id": ["big", "mid", "small", "tiny", "famous"],
        "name": ["Big AG", "Mid GmbH", "Small KG", "Tiny e.K.", "Famous SE"],
        "net_revenue": [Decimal("600"), Decimal("250"), Decimal("100"), Decimal("45"), Decimal("5")],
        "manager_id": ["M1", "M1", "M2", "M2", "M2"],
    }, schema_overrides={"net_revenue": m.MONEY})
    clients = pl.LazyFrame({"client_id": ["famous"], "is_potential": [None], "is_reference": [True],
                            "is_innovator": [None], "is_demanding": [None]},
                           schema_overrides={"is_potential": pl.Boolean, "is_innovator": pl.Boolean,
                                             "is_demanding": pl.Boolean})
    managers = pl.LazyFrame({"manager_id": ["M1", "M2"], "department": ["Key Accounts", "SMB"]})
    unit_rows = key_clients.units(card, clients, managers)
    key = key_clients.build(unit_rows, clients, share=0.10).collect()
    company = key.filter(pl.col("level") == "company")
    assert company.select("client_id", "reasons").rows() == [
        ("big", "share > 10%"), ("mid", "share > 10%"), ("famous", "reference")]
    # within manager M2 (150): small 100/150, tiny 45/150 are key there; famous 5/150 is not (flags: company only)
    m2 = key.filter(pl.col("unit") == "M2")["client_id"].to_list()
    assert m2 == ["small", "tiny"]
    dep = {(r["level"], r["unit"]): r for r in dependency.build(unit_rows).collect()
           .iter_rows(named=True)}
    assert (dep[("company", "company")]["top_client_id"], dep[("company", "company")]["dependency_level"]) == (
        "big", "critical")  # 600 / 1000 > 50%
    assert dep[("manager", "M1")]["top_client_share"] == pytest.approx(600 / 850)
    load = manager_load.build(card, key.lazy(), managers, limit=1).collect()
    assert load.select("manager_id", "key_clients", "is_overloaded").rows() == [("M1", 2, True), ("M2", 1, False)]


def test_ltv_factors_and_segment_lifetime():
    data = pl.LazyFrame({
        "client_id": ["a", "a", "a", "b", "c"],
        "month": [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 4, 1), dt.date(2025, 3, 1),
                  dt.date(2025, 3, 1)],
        "net_revenue": [Decimal("100"), Decimal("100"), Decimal("200"), Decimal("50"), Decimal("10")],
        "net_profit": [Decimal("20"), Decimal("20"), Decimal("40"), Decimal("-5"), Decimal("1")],
        "purchases": [1, 1, 2, 1, 1]}, schema_overrides={"net_revenue": m.MONEY, "net_profit": m.MONEY})
    segments = pl.LazyFrame({"client_id": ["a", "b", "c"], "segment": ["A", "A", "C"]})
    out = {r["client_id"]: r for r in behaviour.ltv(data, segments, as_of=dt.date(2025, 6, 30), min_segment=2)
           .collect().iter_rows(named=True)}
    a = out["a"]
    # S = 400 / 4 purchases; C = 4 purchases / 4 months (Jan-Apr); P = 80 / 400; T = mean span of A = (4 + 1) / 2
    assert (a["ltv_s"], a["ltv_c"], a["ltv_p"], a["ltv_t"]) == (100.0, 1.0, 0.2, 2.5)
    assert a["ltv"] == pytest.approx(50.0)
    assert out["b"]["ltv"] == pytest.approx(50.0 * 1.0 * -0.1 * 2.5)  # a loss-maker's LTV is negative
    # segment C has one client (< 2): T falls back to the mean over everyone, (4 + 1 + 1) / 3
    assert out["c"]["ltv_t"] == pytest.approx(2.0)


def test_target_portrait_lift():
    from transforms.marts import target_portrait

    card = pl.LazyFrame({"client_id": list("abcd"), "abc_revenue": ["A", "A", "B", "C"]})
    clients = pl.LazyFrame({"client_id": list("abcd"), "industry": ["transport", "transport", "retail", None],
                            "size_band": [None] * 4, "region": [None] * 4, "acquisition_channel": [None] * 4},
                           schema_overrides={c: pl.String for c in ("size_band", "region", "acquisition_channel")})
    out = target_portrait.build(card, clients).collect()
    transport = out.filter((pl.col("attribute") == "industry") & (pl.col("value") == "transport")).row(0, named=True)
    assert (transport["share_a"], transport["share_all"], transport["lift"]) == (1.0, 0.5, 2.0)
    assert out.row(0, named=True)["value"] == "transport"  # the top of the table: what A clients share
    assert out.filter(pl.col("value") == "(unknown)").height == 4  # one per attribute


def test_loyalty_ladder_history_and_moves():
    pays = pl.LazyFrame({
        "client_id": ["x", "x", "x", "y", "y", "z"],
        "booking_date": [dt.date(2025, 1, 5), dt.date(2025, 2, 5), dt.date(2025, 3, 5), dt.date(2025, 1, 9),
                         dt.date(2025, 3, 9), dt.date(2024, 1, 2)],
        "amount_reporting": [10.0] * 6})
    months_ = pl.LazyFrame({
        "client_id": ["x", "x", "x", "y", "y", "z"],
        "month": [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1), dt.date(2025, 1, 1),
                  dt.date(2025, 3, 1), dt.date(2024, 1, 1)],
        "purchases": [1, 1, 1, 1, 1, 1]})
    clients = pl.LazyFrame({
        "client_id": ["x", "y", "z", "w"], "referred_by_client_id": [None, None, None, "x"],
        "share_of_wallet": [0.9, None, None, None], "is_exclusive": [None, None, None, None]},
        schema_overrides={"referred_by_client_id": pl.String, "share_of_wallet": pl.Float64,
                          "is_exclusive": pl.Boolean})
    history = behaviour.ladder_history(months_, pays, clients, as_of=dt.date(2025, 3, 31), window_days=365).collect()
    steps = {(r["client_id"], r["month"]): r["step"] for r in history.iter_rows(named=True)}
    assert [steps[("x", dt.date(2025, m_, 1))] for m_ in (1, 2, 3)] == ["first_purchase", "repeat", "adherent"]
    assert [steps[("y", dt.date(2025, m_, 1))] for m_ in (1, 2, 3)] == ["first_purchase", "first_purchase", "repeat"]
    assert steps[("z", dt.date(2025, 3, 1))] == "lost"  # last paid 15 months ago
    moves = behaviour.ladder_transitions(history.lazy()).collect()
    march = {(r["from_step"], r["to_step"]): r["clients"] for r in moves.filter(
        pl.col("month") == dt.date(2025, 3, 1)).iter_rows(named=True)}
    assert march == {("repeat", "adherent"): 1, ("first_purchase", "repeat"): 1, ("lost", "lost"): 1}
    january = moves.filter((pl.col("month") == dt.date(2025, 1, 1)) & (pl.col("from_step") == "new"))
    assert january["clients"].sum() == 2  # x and y start on the ladder


def test_ladder_thresholds_come_from_the_settings():
    """'regular' needs purchases in regular_months of the last regular_window_months; 'adherent' a share of
    wallet of at least exclusive_share."""
    pays = pl.LazyFrame({"client_id": ["x"] * 3, "amount_reporting": [10.0] * 3,
                         "booking_date": [dt.date(2025, 1, 5), dt.date(2025, 3, 5), dt.date(2025, 5, 5)]})
    months_ = pl.LazyFrame({"client_id": ["x"] * 3, "purchases": [1] * 3,
                            "month": [dt.date(2025, 1, 1), dt.date(2025, 3, 1), dt.date(2025, 5, 1)]})
    clients = pl.LazyFrame({"client_id": ["x"], "referred_by_client_id": [None], "share_of_wallet": [0.7],
                            "is_exclusive": [None]}, schema_overrides={"referred_by_client_id": pl.String,
                                                                       "is_exclusive": pl.Boolean})

    def may(**kw):
        history = behaviour.ladder_history(months_, pays, clients, as_of=dt.date(2025, 5, 31), window_days=365,
                                           **kw).collect()
        return history.filter(pl.col("month") == dt.date(2025, 5, 1))["step"].item()

    assert may() == "regular"  # 3 of the last 6 months
    assert may(regular_window_months=4) == "repeat"  # 2 of the last 4
    assert may(regular_months=2, regular_window_months=4) == "regular"
    assert may(exclusive_share=0.7) == "adherent"


def test_advocate_needs_a_referred_client_who_paid():
    stage = pl.select(behaviour.ladder_stage(pl.lit(5), pl.lit(4), pl.lit(False), pl.lit(False), pl.lit(True),
                                             pl.lit(True))).item()
    assert stage == "advocate"
    assert pl.select(behaviour.ladder_stage(pl.lit(5), pl.lit(1), pl.lit(True), pl.lit(False), pl.lit(False),
                                            pl.lit(True))).item() == "regular"  # regular through XYZ X/Y


def test_xyz_boundaries_are_inclusive():
    boundary = months(
        [("x", dt.date(2025, i, 1), v, v) for i, v in zip(range(1, 5), [90.0, 110.0, 90.0, 110.0], strict=True)]
        + [("y", dt.date(2025, i, 1), v, v) for i, v in zip(range(1, 5), [75.0, 125.0, 75.0, 125.0], strict=True)])
    first = pl.LazyFrame({"client_id": ["x", "y"], "first_payment": [dt.date(2025, 1, 1)] * 2})
    out = dict(behaviour.xyz(boundary, first, window=(dt.date(2025, 1, 1), dt.date(2025, 4, 1))).collect()
               .select("client_id", "xyz").iter_rows())
    assert out == {"x": "X", "y": "Y"}  # CV exactly 0.10 is X, exactly 0.25 is Y


def test_advocate_via_a_referred_client_who_paid():
    pays = pl.LazyFrame({
        "client_id": ["x", "x", "x", "w"],
        "booking_date": [dt.date(2025, 1, 5), dt.date(2025, 2, 5), dt.date(2025, 3, 5), dt.date(2025, 3, 20)],
        "amount_reporting": [10.0] * 4})
    months_ = pl.LazyFrame({"client_id": ["x", "x", "x", "w"],
                            "month": [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1),
                                      dt.date(2025, 3, 1)], "purchases": [1, 1, 1, 1]})
    clients = pl.LazyFrame({"client_id": ["x", "w"], "referred_by_client_id": [None, "x"],
                            "share_of_wallet": [None, None], "is_exclusive": [None, None]},
                           schema_overrides={"referred_by_client_id": pl.String, "share_of_wallet": pl.Float64,
                                             "is_exclusive": pl.Boolean})
    history = behaviour.ladder_history(months_, pays, clients, as_of=dt.date(2025, 3, 31), window_days=365).collect()
    steps = {(r["client_id"], r["month"]): r["step"] for r in history.iter_rows(named=True)}
    # x is regular in March (3 of the last 6 months) and w, who names x as referrer, paid on March 20th
    assert steps[("x", dt.date(2025, 3, 1))] == "advocate"
    assert steps[("x", dt.date(2025, 2, 1))] == "repeat"


def test_per_client_windows_do_not_depend_on_the_row_order():
    """The ladder, its moves, the activity gaps and the CLV summary read each client's rows in date order; the
    inputs arrive in any order (and are not sorted by client), so shuffled inputs must give the same rows."""

    from transforms import clv

    rng = random.Random(3)
    rows = [(f"c{rng.randrange(60):02d}", dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(600)),
             Decimal(rng.randrange(1, 10_000)) / 100) for _ in range(1500)]
    schema = {"client_id": pl.String, "booking_date": pl.Date, "amount_reporting": pl.Decimal(18, 2)}
    as_of = dt.date(2025, 8, 31)
    clients = pl.LazyFrame({"client_id": [f"c{i:02d}" for i in range(60)],
                            "referred_by_client_id": [None] * 58 + ["c01", "c02"]},
                           schema={"client_id": pl.String, "referred_by_client_id": pl.String}).with_columns(
        share_of_wallet=pl.lit(None, pl.Float64), is_exclusive=pl.lit(None, pl.Boolean))

    def outputs(order):
        pays = pl.DataFrame(order, schema=schema, orient="row").lazy()
        months_ = pays.group_by("client_id", pl.col("booking_date").dt.truncate("1mo").alias("month")).agg(
            purchases=pl.len())
        history = behaviour.ladder_history(months_, pays, clients, as_of=as_of, window_days=90)
        return [frame.collect().sort(pl.all()) for frame in (
            history, behaviour.ladder_transitions(history),
            behaviour.activity(behaviour.daily_payments(pays), as_of=as_of, at_risk_factor=2.0, window_days=90),
            clv.client_summary(behaviour.daily_payments(pays), as_of=as_of))]

    first = outputs(rows)
    assert first[0].filter(pl.col("step") == "lost").height > 0 and first[2]["usual_gap_days"].null_count() < 60
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert all(a.equals(b) for a, b in zip(first, outputs(shuffled), strict=True))


def test_the_ladder_from_a_month_on_equals_those_months_of_the_whole_history():
    """``since`` walks only the regular window before it and sums up the months before that: every step from
    ``since`` on is the whole history's (purchase totals, last payment days, purchase months in the window,
    referrals and exclusivity), whichever month it starts from."""

    rng = random.Random(7)
    rows = [(f"c{rng.randrange(40):02d}", dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(640)))
            for _ in range(700)]
    rows += [("late", dt.date(2025, 9, 3)), ("gone", dt.date(2024, 2, 1))]  # first pays in the last month; long lost
    pays = pl.DataFrame(rows, schema={"client_id": pl.String, "booking_date": pl.Date}, orient="row").lazy()
    months_ = pays.group_by("client_id", pl.col("booking_date").dt.truncate("1mo").alias("month")).agg(
        purchases=pl.len())
    ids = [f"c{i:02d}" for i in range(40)] + ["late", "gone"]
    clients = pl.LazyFrame({"client_id": ids, "referred_by_client_id": [None] * 38 + ["c01", "c02", None, None],
                            "share_of_wallet": [0.9, 0.5] + [None] * 40, "is_exclusive": [None] * 41 + [True]},
                           schema={"client_id": pl.String, "referred_by_client_id": pl.String,
                                   "share_of_wallet": pl.Float64, "is_exclusive": pl.Boolean})
    as_of = dt.date(2025, 9, 30)
    whole = behaviour.ladder_history(months_, pays, clients, as_of=as_of, window_days=90).collect()
    assert set(whole["step"]) >= {"first_purchase", "repeat", "regular", "adherent", "advocate", "lost"}
    for since in (dt.date(2024, 1, 1), dt.date(2024, 4, 1), dt.date(2025, 2, 1), dt.date(2025, 9, 1)):
        part = behaviour.ladder_history(months_, pays, clients, as_of=as_of, window_days=90, since=since).collect()
        expected = whole.filter(pl.col("month") >= since)
        assert part.height == expected.height > 0
        assert part.sort("client_id", "month").equals(expected.sort("client_id", "month")), since
    after = behaviour.ladder_history(months_, pays, clients, as_of=as_of, window_days=90, since=dt.date(2025, 10, 1))
    assert after.collect().height == 0


@pytest.mark.parametrize(("first_month", "periods_expected"), [
    (dt.date(2023, 1, 1), 30 + 10 + 2),
    (dt.date(2018, 1, 1), 90 + 30 + 7),  # more than 63 boundary days: the activity bits span two words
])
def test_retention_equals_its_definitions_client_by_client(first_month, periods_expected):
    """Random histories against the DOMAIN §5 definitions evaluated client by client in plain Python."""

    rng = random.Random(11)
    rows = []
    for c in range(80):
        start = dt.date(2022, 6, 1) + dt.timedelta(days=rng.randrange(900))
        for _ in range(rng.randrange(1, 12)):
            rows.append((f"k{c:02d}", start + dt.timedelta(days=rng.randrange(0, 500)),
                         Decimal(rng.randrange(-2_000, 50_000)) / 100))
    rows = [r for r in rows if r[1] <= dt.date(2025, 6, 30)]
    rng.shuffle(rows)
    money = pl.DataFrame(rows, schema={"client_id": pl.String, "booking_date": pl.Date,
                                       "amount_reporting": pl.Decimal(18, 2)}, orient="row").lazy()
    # the negative amounts are refunds: they lower the revenue, only payments make a client active
    pays, refunds = money.filter(pl.col("amount_reporting") > 0), money.filter(pl.col("amount_reporting") < 0)
    window_days = 120
    periods = behaviour.periods(first_month, dt.date(2025, 6, 1))
    out = behaviour.retention(pays, periods, window_days=window_days, refunds=refunds).collect()
    assert out.height == periods.collect().height == periods_expected

    by_client: dict[str, list[tuple[dt.date, Decimal]]] = {}
    for client, day, amount in rows:
        by_client.setdefault(client, []).append((day, amount))
    # activity and first purchases from the payments only (a client with refunds alone is never active nor new)
    by_client = {c: [(d, a) for d, a in days if a > 0] or [(dt.date.max, Decimal(0))] for c, days in by_client.items()}
    refunded: dict[str, list[tuple[dt.date, Decimal]]] = {}
    for client, day, amount in money.filter(pl.col("amount_reporting") < 0).collect().iter_rows():
        refunded.setdefault(client, []).append((day, amount))

    def active(client, day):
        return any(0 <= (day - d).days < window_days for d, _ in by_client[client])

    def paid(client, first, last):  # net revenue in the period, at least 0
        return max(sum((a for d, a in by_client[client] + refunded.get(client, []) if first <= d <= last),
                       Decimal(0)), Decimal(0))

    for r in out.iter_rows(named=True):
        start, end = r["period_start"], r["period_end"]
        before = start - dt.timedelta(days=1)
        prev_start = {"month": m.next_month(start.replace(day=28) - dt.timedelta(days=60)),
                      "quarter": dt.date(start.year - (start.month < 4), (start.month - 4) % 12 + 1, 1),
                      "year": dt.date(start.year - 1, 1, 1)}[r["period_type"]]
        s = {c for c in by_client if active(c, before)}
        e = {c for c in by_client if active(c, end)}
        n = {c for c in by_client if start <= min(d for d, _ in by_client[c]) <= end}
        now = {c: paid(c, start, end) for c in s}
        prev = {c: paid(c, prev_start, before) for c in s}
        kept = sum((min(now[c], prev[c]) for c in s), Decimal(0))
        assert (r["clients_start"], r["clients_end"], r["new_clients"], r["churned"], r["reactivated"]) == (
            len(s), len(e), len(n), len(s - e), len(e - s - n)), r
        total_prev = sum(prev.values(), Decimal(0))
        assert r["net_revenue_retention"] == (pytest.approx(float(sum(now.values()) / total_prev))
                                              if total_prev > 0 else None), r
        assert r["gross_revenue_retention"] == (pytest.approx(float(kept / total_prev))
                                                if total_prev > 0 else None), r
    assert out["churned"].sum() > 10 and out["reactivated"].sum() > 3 and out["new_clients"].sum() > 40
    no_periods = behaviour.retention(pays, periods.clear(), window_days=window_days).collect()
    assert no_periods.height == 0 and no_periods.columns == out.columns


@pytest.mark.parametrize(("kind", "start", "before"), [
    ("month", dt.date(2026, 1, 1), dt.date(2025, 12, 1)), ("month", dt.date(2026, 3, 1), dt.date(2026, 2, 1)),
    ("quarter", dt.date(2026, 1, 1), dt.date(2025, 10, 1)), ("quarter", dt.date(2026, 7, 1), dt.date(2026, 4, 1)),
    ("year", dt.date(2026, 1, 1), dt.date(2025, 1, 1)),
])
def test_previous_period_start(kind, start, before):
    assert behaviour.previous_period_start(kind, start) == before
