from decimal import Decimal

import polars as pl

from expectations import suites
from expectations.gate import run_gate

CHECKED = ("client_month", "run_log", "unmatched_counterparties", "revenue_reconciliation")


def suite():
    return {k: v for k, v in suites.marts_suite().items() if k in CHECKED}


def test_marts_gate_passes_clean_and_fails_broken_data():
    import datetime as dt

    from transforms.marts import client_month

    zero = Decimal("0.00")
    good = pl.DataFrame({
        "client_id": ["C1"], "month": [dt.date(2025, 1, 1)], "revenue": [Decimal("1.00")],
        "refunds": [zero], "net_revenue": [Decimal("1.00")], "purchases": [1], "gross_margin": [Decimal("0.30")],
        "communication_cost": [zero], "support_cost": [zero], "collection_cost": [zero], "bad_debt": [zero],
        "net_profit": [Decimal("0.30")], "hours_spent": [0.0], "reporting_currency": ["EUR"],
    }, schema={c: t for c, (t, _) in client_month.SCHEMA.items()})
    log = pl.DataFrame({c: [] for c in suites.run_log.SCHEMA})
    unmatched = pl.DataFrame(schema={c: t for c, (t, _) in suites.unmatched_counterparties.SCHEMA.items()})
    recon_ok = pl.DataFrame({"month": [dt.date(2025, 1, 1)], "diff": [Decimal("0.00")]})
    ok = run_gate("marts", "r1", {"client_month": good, "run_log": log, "unmatched_counterparties": unmatched,
                   "revenue_reconciliation": recon_ok},
                  suite())
    assert ok.passed, ok.failures
    assert all(r["success"] for r in ok.results)
    assert {r["dataset"] for r in ok.results} == {"client_month", "run_log", "unmatched_counterparties",
                                                  "revenue_reconciliation"}

    broken = pl.concat([good, good.with_columns(revenue=pl.lit(Decimal("-5.00")))])
    recon_bad = pl.DataFrame({"month": [dt.date(2025, 1, 1)], "diff": [Decimal("0.01")]})
    bad = run_gate("marts", "r2", {"client_month": broken, "run_log": log,
                                    "unmatched_counterparties": unmatched, "revenue_reconciliation": recon_bad},
                   suite())
    assert not bad.passed
    failed = {(r["dataset"], r["check_name"], r["column_name"]) for r in bad.results if not r["success"]}
    assert failed == {
        ("client_month", "expect_compound_columns_to_be_unique", "client_id,month"),
        ("client_month", "expect_column_values_to_be_between", "revenue"),
        ("revenue_reconciliation", "expect_column_values_to_be_between", "diff"),
    }
    assert any("revenue_reconciliation.diff" in f for f in bad.failures)
