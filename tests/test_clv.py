"""BG/NBD and Gamma-Gamma reproduce the published CDNOW estimates (Fader, Hardie & Lee 2005)."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from transforms import behaviour, clv

CDNOW = pl.read_csv(Path(__file__).parent / "fixtures" / "cdnow" / "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def model() -> clv.BgNbd:
    return clv.fit_bgnbd(CDNOW["x"], CDNOW["t_x"], CDNOW["T"])


def test_bgnbd_reproduces_the_paper(model):
    assert CDNOW.height == 2357
    assert model.r == pytest.approx(0.243, rel=0.01)
    assert model.alpha == pytest.approx(4.414, rel=0.01)
    assert model.a == pytest.approx(0.793, rel=0.01)
    assert model.b == pytest.approx(2.426, rel=0.01)
    # the paper's log-likelihood at the optimum: -9582.4
    ll = clv.bgnbd_log_likelihood(np.array([model.r, model.alpha, model.a, model.b]), CDNOW["x"].to_numpy(),
                                  CDNOW["t_x"].to_numpy(), CDNOW["T"].to_numpy()).sum()
    assert ll == pytest.approx(-9582.4, abs=0.5)


def test_conditional_expectation_and_p_alive(model):
    # the paper's example customer: x = 2, t_x = 30.43, T = 38.86 -> 1.226 purchases in the next 39 weeks
    assert clv.expected_purchases(model, 39, 2, 30.43, 38.86) == pytest.approx(1.226, rel=0.01)
    assert float(clv.p_alive(model, 0, 0, 38.86)) == 1.0  # no repeat purchase: never observed dropping out
    assert 0 < float(clv.p_alive(model, 10, 5, 38.86)) < 0.1  # bought 10 times early, then silent for 34 weeks


def test_gamma_gamma_spend():
    spend = clv.fit_gamma_gamma(CDNOW["x"], CDNOW["zbar"])
    # Fader, Hardie & Lee (2005, "RFM and CLV"): p = 6.25, q = 3.74, gamma = 15.44
    assert (spend.p, spend.q, spend.gamma) == (pytest.approx(6.25, rel=0.01), pytest.approx(3.74, rel=0.01),
                                               pytest.approx(15.44, rel=0.01))
    assert float(clv.expected_spend(spend, 0, 0)) == pytest.approx(6.25 * 15.44 / 2.74, rel=0.02)


def test_scores_on_the_cdnow_summary_and_the_small_sample_guard():
    summary = CDNOW.select(pl.col("ID").cast(pl.String).alias("client_id"), pl.col("x").cast(pl.Float64),
                           "t_x", "T", "zbar")
    out = clv.scores(summary, horizon_months=39)
    first = out.row(0, named=True)  # the paper's example customer (x=2, t_x=30.43, T=38.86)
    assert first["clv_purchases_12m"] == pytest.approx(1.226, rel=0.01)
    assert first["clv_revenue_12m"] == pytest.approx(first["clv_purchases_12m"] * first["clv_expected_spend"])
    few = clv.scores(summary.head(30))  # only a handful of repeat buyers: no fit, nulls rather than a guess
    assert few["clv_purchases_12m"].null_count() == 30


def test_client_summary_from_payments():
    import datetime as dt

    payments = pl.LazyFrame({
        "client_id": ["a", "a", "a", "a", "b"],
        "booking_date": [dt.date(2025, 1, 1), dt.date(2025, 1, 1), dt.date(2025, 3, 2), dt.date(2025, 5, 1),
                         dt.date(2025, 6, 1)],
        "amount_reporting": [10.0, 5.0, 30.0, 50.0, 7.0]})
    # in reverse order (the first day's value is found by its date, not its row), with a day after as-of
    payments = pl.concat([payments.reverse(), pl.LazyFrame({
        "client_id": ["b"], "booking_date": [dt.date(2025, 7, 2)], "amount_reporting": [99.0]})])
    days = behaviour.daily_payments(payments)
    out = {r["client_id"]: r for r in clv.client_summary(days, as_of=dt.date(2025, 7, 1)).collect()
           .iter_rows(named=True)}
    # three purchase days -> two repeats worth (30 + 50) / 2; months measured in days / 30.4375
    assert (out["a"]["x"], out["a"]["zbar"]) == (2.0, 40.0)
    assert out["a"]["t_x"] == pytest.approx(120 / 30.4375)
    assert out["a"]["T"] == pytest.approx(181 / 30.4375)
    assert (out["b"]["x"], out["b"]["zbar"]) == (0.0, 0.0)


def test_fit_does_not_depend_on_the_number_of_customers(monkeypatch):
    """20 copies of CDNOW have the same optimum; the stopping rule is per customer, so the fit stays short (on the
    summed likelihood an absolute tolerance fell below float resolution at 250k clients and ran 40,000 steps)."""
    calls = []
    objective = clv._bgnbd_objective

    def counted(*data):
        likelihood = objective(*data)
        return lambda *a, **k: calls.append(1) or likelihood(*a, **k)

    monkeypatch.setattr(clv, "_bgnbd_objective", counted)
    x, t_x, T = (np.tile(CDNOW[c].to_numpy().astype(float), 20) for c in ("x", "t_x", "T"))
    many = clv.fit_bgnbd(x, t_x, T)
    assert (many.r, many.alpha, many.a, many.b) == (pytest.approx(0.2426, rel=2e-3), pytest.approx(4.414, rel=1e-2),
                                                    pytest.approx(0.793, rel=1e-2), pytest.approx(2.426, rel=1e-2))
    assert 5 < len(calls) < 60  # with the exact gradient (numerical ones took ~200 evaluations)


def assert_gradient(likelihood, params):
    """The objective's gradient against central differences in the log-parameters (as the fit sees them: a
    parameter near 0 makes differences in the parameter itself cancel), Richardson-extrapolated (error ~h^4)."""
    _, gradient = likelihood(np.array(params), gradient=True)

    def central(k: int, h: float) -> float:
        up, down = np.log(params), np.log(params)
        up[k], down[k] = up[k] + h, down[k] - h
        return (likelihood(np.exp(up))[0].mean() - likelihood(np.exp(down))[0].mean()) / (2 * h)

    for k in range(len(params)):
        numeric = (4 * central(k, 5e-4) - central(k, 1e-3)) / 3
        assert gradient[k] * params[k] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("params", [(0.243, 4.414, 0.793, 2.426), (1.5, 0.3, 2e-6, 900.0), (0.05, 40.0, 5.0, 0.2)])
def test_bgnbd_gradient_is_the_derivative_of_the_mean_log_likelihood(params):
    likelihood = clv._bgnbd_objective(*(CDNOW[c].to_numpy().astype(float) for c in ("x", "t_x", "T")))
    assert_gradient(likelihood, params)


@pytest.mark.parametrize("params", [(6.25, 3.74, 15.44), (0.5, 20.0, 0.1)])
def test_gamma_gamma_gradient_is_the_derivative_of_the_mean_log_likelihood(params):
    keep = (CDNOW["x"] > 0) & (CDNOW["zbar"] > 0)
    likelihood = clv._gamma_gamma_objective(CDNOW.filter(keep)["x"].to_numpy().astype(float),
                                            CDNOW.filter(keep)["zbar"].to_numpy())
    assert_gradient(likelihood, params)


def test_a_fit_whose_optimum_is_at_the_edge_converges():
    """Clients who never drop out (buying at their own steady rate for 6-36 months) put the BG/NBD optimum at
    a -> 0, where the objective is flat to float resolution: the 10M bench's clients got no CLV at all there
    (the line search failed). Both line-search outcomes near such an optimum must end the fit."""
    rng = np.random.default_rng(7)
    T = rng.integers(6, 37, 3000).astype(float)
    x = rng.poisson(rng.gamma(2.0, 1.0, 3000) * T).astype(float)
    t_x = np.round(np.array([rng.uniform(0, t, int(k)).max() if k else 0.0 for t, k in zip(T, x, strict=True)])
                   * 30.4375) / 30.4375
    model = clv.fit_bgnbd(x, t_x, T)
    assert model.r == pytest.approx(2.0, rel=0.05)  # the rates were drawn from a gamma of shape 2, scale 1
    assert model.alpha == pytest.approx(1.0, rel=0.05)
    assert model.a < 1e-4  # no drop-out
    assert clv.p_alive(model, x, t_x, T).min() > 0.999


def test_scores_do_not_depend_on_the_row_order_of_the_summary():
    """A group-by hands the summary over in any order; the fitted scores must be the same bits."""
    summary = CDNOW.select(pl.col("ID").cast(pl.String).alias("client_id"), pl.col("x").cast(pl.Float64),
                           "t_x", "T", "zbar")
    one = clv.scores(summary).sort("client_id")
    for seed in range(2):
        two = clv.scores(summary.sample(fraction=1.0, shuffle=True, seed=seed)).sort("client_id")
        assert one.to_arrow().to_pydict() == two.to_arrow().to_pydict()


DEMO = pl.read_csv(Path(__file__).parent / "fixtures" / "clv" / "demo_clients_summary.csv")


def test_gamma_gamma_is_fitted_the_same_in_any_money_unit():
    """gamma is the spend's scale: spend in cents has the same p and q and 100x the gamma."""
    euros = clv.fit_gamma_gamma(CDNOW["x"], CDNOW["zbar"])
    cents = clv.fit_gamma_gamma(CDNOW["x"], CDNOW["zbar"] * 100)
    assert (cents.p, cents.q, cents.gamma) == (pytest.approx(euros.p, rel=1e-6), pytest.approx(euros.q, rel=1e-6),
                                               pytest.approx(euros.gamma * 100, rel=1e-6))


def test_the_demo_clients_get_a_clv():
    """The demo's spends put the Gamma-Gamma optimum on a flat ridge (p -> infinity): fitted in money units, the
    fit failed and no client had a CLV. p itself is then arbitrary, but what the model predicts is not."""
    x, zbar = DEMO["x"].to_numpy(), DEMO["zbar"].to_numpy()
    spend = clv.fit_gamma_gamma(x, zbar)
    assert spend.p > 1e4 and spend.q == pytest.approx(1.5561, rel=1e-3)
    assert float(clv.expected_spend(spend, 0, 0)) == pytest.approx(3034.45, rel=1e-3)  # a new client's spend
    repeat = (x > 0) & (zbar > 0)
    assert clv.expected_spend(spend, x[repeat], zbar[repeat]) == pytest.approx(zbar[repeat], rel=1e-3)
    scores = clv.scores(DEMO)
    assert scores["clv_revenue_12m"].null_count() == 0 and scores.height == 302
    assert scores["clv_revenue_12m"].sum() > 0
