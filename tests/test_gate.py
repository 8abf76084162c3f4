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
    # a duplicated key is named once, with its row count
    assert [r["observed"] for r in bad.results if r["check_name"] == "expect_compound_columns_to_be_unique"] == [
        '{"unexpected_count": 1, "examples": ["C1, 2025-01-01 (2 rows)"]}']


def test_gx_duckdb_patch_keeps_results_readable():
    """GX's SQL engine on duckdb 2.0 reads results after returning the connection (GX issue #10738); the gate
    patches GX to keep a persisted connection for duckdb. If that patch stops working (GX renames or drops
    ``_PERSISTED_CONNECTION_DIALECTS``, or changes how it uses it), these metrics come back empty."""
    import duckdb
    import great_expectations as gx

    from expectations.gate import patch_gx_for_duckdb

    patch_gx_for_duckdb()
    from great_expectations.execution_engine import sqlalchemy_execution_engine as engine

    assert "duckdb" in engine._PERSISTED_CONNECTION_DIALECTS
    assert engine._dialect_requires_persisted_connection(connection_string="duckdb:///:memory:")

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS id, if(range % 2 = 0, NULL, 'x') AS v FROM range(10)")
    E = gx.expectations
    outcome = run_gate("t", "r1", {"t": "SELECT * FROM t"},
                       {"t": [E.ExpectColumnValuesToBeUnique(column="id"), E.ExpectColumnValuesToNotBeNull(column="v"),
                              E.ExpectTableRowCountToEqual(value=10)]}, con=con)
    assert [(r["check_name"], r["success"], r["observed"]) for r in outcome.results] == [
        ("expect_column_values_to_be_unique", True, '{"unexpected_count": 0, "examples": []}'),
        ("expect_column_values_to_not_be_null", False, '{"unexpected_count": 5, "examples": [null, null, null, '
                                                       'null, null]}'),
        ("expect_table_row_count_to_equal", True, "10"),
    ]
    # the gate's scratch catalog and GX's cursors are gone: the caller's connection is as it was
    assert con.sql("SELECT count(*) FROM duckdb_databases() WHERE database_name = 'gate_scratch'").fetchall() == [(0,)]
    con.close()


def test_failing_expectations_on_duckdb_data_give_dq_results_rows():
    """Checks on a DuckDB table, with exact Decimals, a SQL row condition and the regex stand-in."""
    import datetime as dt

    import duckdb

    con = duckdb.connect()
    con.execute("""CREATE TABLE txn AS SELECT * FROM (VALUES
        ('EUR', 'client_payment', 'C1', 10.00::DECIMAL(18, 2)),
        ('eur', 'client_payment', NULL, -0.01::DECIMAL(18, 2)),
        ('USD', 'fee', NULL, 5.00::DECIMAL(18, 2))) v(currency, category, client_id, amount)""")
    raw = suites.raw_suite(dt.date(1990, 1, 1))["raw.bank_transaction"]
    regex = next(e for e in raw if (e.meta or {}).get("check_name") == "expect_column_values_to_match_regex")
    staged = suites.staged_suite("EUR")["staging.bank_transaction"]
    client_id = next(e for e in staged if getattr(e, "column", None) == "client_id")
    E = suites._gx()
    outcome = run_gate("staged", "run-7", {"txn": "SELECT * FROM txn"},
                       {"txn": [regex, client_id, E.ExpectColumnValuesToBeBetween(column="amount", min_value=0)]},
                       con=con)
    con.close()
    assert not outcome.passed
    rows = [{k: v for k, v in r.items() if k != "checked_at"} for r in outcome.results]
    assert rows == [
        {"run_id": "run-7", "gate": "staged", "dataset": "txn", "check_name": "expect_column_values_to_match_regex",
         "column_name": "currency", "success": False, "observed": '{"unexpected_count": 1, "examples": ["eur"]}'},
        {"run_id": "run-7", "gate": "staged", "dataset": "txn", "check_name": "expect_column_values_to_not_be_null",
         "column_name": "client_id", "success": False,
         "observed": '{"unexpected_count": 1, "examples": [null]}'},
        {"run_id": "run-7", "gate": "staged", "dataset": "txn", "check_name": "expect_column_values_to_be_between",
         "column_name": "amount", "success": False, "observed": '{"unexpected_count": 1, "examples": [-0.01]}'},
    ]
    assert all(isinstance(r["checked_at"], dt.datetime) for r in outcome.results)
    assert outcome.failures[0] == ('txn.currency expect_column_values_to_match_regex '
                                   '(observed {"unexpected_count": 1, "examples": ["eur"]})')


def test_a_gate_right_after_the_gx_preload_runs_normally():
    """The flow starts GX's import on a thread and its first gate may come while that import is still running
    (the gate's own import then waits for it): in a fresh process, so GX is not loaded yet."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
import datetime as dt
from decimal import Decimal
import polars as pl
from expectations import suites
from expectations.gate import preload, run_gate
assert "great_expectations" not in sys.modules
thread = preload()
suite = {k: v for k, v in suites.marts_suite().items() if k == "revenue_reconciliation"}
frame = pl.DataFrame({"month": [dt.date(2025, 1, 1)], "diff": [Decimal("0.02")]})
outcome = run_gate("marts", "r1", {"revenue_reconciliation": frame}, suite)
thread.join(60)
print(outcome.passed, [r["check_name"] for r in outcome.results if not r["success"]], thread.is_alive())
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "GX_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False ['expect_column_values_to_be_between'] False"


def test_data_docs_compile_each_template_once_per_process(tmp_path, monkeypatch):
    """GX makes a jinja2 environment per Data Docs view, each compiling its templates again; the gate lets them
    share one cache of compiled templates (``share_gx_templates``), so a second gate's docs compile nothing and
    still render every page."""
    import datetime as dt

    import jinja2

    from expectations import gate

    compiled: list[str | None] = []
    compile_ = jinja2.Environment.compile

    def counting(self, source, name=None, *args, **kwargs):
        compiled.append(name)
        return compile_(self, source, name, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    frame = pl.DataFrame({"month": [dt.date(2025, 1, 1)], "diff": [Decimal("0.00")]})
    sites = []
    for n in range(2):
        site = tmp_path / f"docs{n}"
        suite = {k: v for k, v in suites.marts_suite().items() if k == "revenue_reconciliation"}
        outcome = run_gate("marts", f"r{n}", {"revenue_reconciliation": frame}, suite, docs_dir=site)
        assert outcome.passed
        sites.append(site)
        if n == 0:
            assert compiled or gate.share_gx_templates().codes  # compiled now, or by a gate run before this test
            compiled.clear()
    assert compiled == []  # every template the second site rendered came from the cache
    assert len(gate.share_gx_templates().codes) >= 20
    for site in sites:
        pages = {p.relative_to(site).parts[0] for p in site.rglob("*.html")}
        assert {"index.html", "validations"} <= pages
        assert "revenue_reconciliation" in (site / "index.html").read_text(encoding="utf-8")


def test_every_suite_lists_each_expectation_once():
    """The gate hands a dataset's expectations to its GX suite at once, which keeps them all (adding them one by
    one, GX dropped one equal to an earlier one but for its id, notes and meta): a repeated expectation would be
    validated and reported twice."""
    import datetime as dt

    from great_expectations.core.expectation_suite import ExpectationSuite

    for suite in (suites.raw_suite(dt.date(2020, 1, 1)), suites.staged_suite("EUR"), suites.marts_suite()):
        for dataset, expectations in suite.items():
            for n, expectation in enumerate(expectations):
                assert not any(ExpectationSuite._expectations_are_equalish(expectation, earlier)
                               for earlier in expectations[:n]), (dataset, expectation)


def test_a_gate_stores_each_suite_once_and_no_configuration(monkeypatch):
    """GX wrote a stored suite back whole after each expectation added to it, and dumped its whole configuration
    as YAML after each data asset and batch definition: the gate adds each suite with its expectations, and its
    ephemeral context keeps no copies of its configuration. Fails if GX's way of saving either changes."""
    import datetime as dt

    from great_expectations.data_context.data_context_variables import DataContextVariables
    from great_expectations.data_context.store.expectations_store import ExpectationsStore

    calls = {"suite_writes": 0, "config_saves": 0}
    add, update, save = ExpectationsStore._add, ExpectationsStore.update, DataContextVariables.save

    def counting(name, method):
        def wrapper(self, *args, **kwargs):
            calls[name] += 1
            return method(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(ExpectationsStore, "_add", counting("suite_writes", add))
    monkeypatch.setattr(ExpectationsStore, "update", counting("suite_writes", update))
    monkeypatch.setattr(DataContextVariables, "save", counting("config_saves", save))
    months = [dt.date(2025, 1, 1), dt.date(2025, 2, 1)]
    datasets = {"revenue_reconciliation": pl.DataFrame({"month": months, "diff": [Decimal("0.00")] * 2}),
                "ladder_transitions": pl.DataFrame({"month": months, "from_step": ["repeat"] * 2,
                                                    "to_step": ["regular", "lost"]})}
    suite = {k: v for k, v in suites.marts_suite().items() if k in datasets}
    assert [len(suite[name]) for name in datasets] == [1, 2]
    outcome = run_gate("marts", "r", datasets, suite)
    assert outcome.passed
    assert len(outcome.results) == sum(len(v) for v in suite.values())
    assert calls == {"suite_writes": len(suite), "config_saves": 0}


def test_a_compound_key_is_unique_unless_two_rows_hold_it_whole():
    """Rows with a null key column are not duplicates of each other (as in GX's own SQL for the check)."""
    frame = pl.DataFrame({"client_id": ["C1", "C1", "C2", None, None, "C3"],
                          "month": ["2025-01", "2025-01", "2025-01", "2025-01", "2025-01", None]})
    outcome = run_gate("t", "r1", {"t": frame}, {"t": [suites.unique_key(["client_id", "month"])]})
    assert [(r["check_name"], r["column_name"], r["success"], r["observed"]) for r in outcome.results] == [
        ("expect_compound_columns_to_be_unique", "client_id,month", False,
         '{"unexpected_count": 1, "examples": ["C1, 2025-01 (2 rows)"]}')]
    assert run_gate("t", "r2", {"t": frame.slice(1)}, {"t": [suites.unique_key(["client_id", "month"])]}).passed


def test_the_cli_entry_starts_the_gx_import_before_the_flow(monkeypatch):
    """GX's import (~4 s of one core) overlaps Prefect starting its API server and the flow run: measured on the
    demo inbox through `clientbase run`, the flow's start to the raw gate's end took 3.8-4.7 s against 8.3-8.8 s
    when the flow's body started the import (it then also slowed the loading threads down)."""
    from clientbase.config import ExecutionConfig
    from flows import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "preload_gates", lambda: calls.append("preload"))
    monkeypatch.setattr(pipeline, "with_execution", lambda flow_, execution: lambda **kw: calls.append(("flow", kw)))
    pipeline.run_with_execution(pipeline.nightly, ExecutionConfig(), home="h")
    assert calls == ["preload", ("flow", {"home": "h"})]
