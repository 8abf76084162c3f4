"""Running a gate: validate datasets against a suite, produce ``dq_results`` rows and a verdict.

Datasets are validated where they are, in DuckDB, through GX's SQL datasource (duckdb-engine): each dataset
is a SQL query (a warehouse table, a derived query, parquet files via ``read_parquet``) run on a cursor of the
caller's connection, so the data never comes into Python and Decimal money columns are compared exactly.
Small polars frames are also accepted: they are copied into an in-memory catalog attached to the connection
(``gate_scratch``) and validated from there.

With ``docs_dir`` the gate also writes GX Data Docs (one static site per gate, replaced by each run); the
HTML report links to them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from expectations.suites import Suite
from warehouse.db import quote_ident

log = logging.getLogger(__name__)

SCRATCH = "gate_scratch"  # in-memory catalog for the frames a gate is given, attached for the gate's duration


@dataclass
class GateOutcome:
    gate: str
    passed: bool
    results: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    hint: str | None = None  # what to do about a failure, shown after the failures


def _import_gx() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    try:
        import great_expectations  # noqa: F401
        import great_expectations.execution_engine.sqlalchemy_execution_engine  # noqa: F401
        from duckdb_engine import ConnectionWrapper  # noqa: F401
    except Exception:  # the gate's own import raises it where it belongs
        log.debug("preloading GX failed", exc_info=True)


def preload() -> threading.Thread:
    """Import GX on a background thread: its import takes ~3 s of one core on the reference machine, which the
    first gate of a run would otherwise wait for. A run starts this, then lists, hashes and loads its inbox
    meanwhile; the first gate's own import then finds the modules loaded, or waits for the rest of this one
    (Python's import locks). A failed import here changes nothing: the gate imports again and raises there."""
    thread = threading.Thread(target=_import_gx, name="preload-gx", daemon=True)
    thread.start()
    return thread


def patch_gx_for_duckdb() -> None:
    """Make GX keep one persisted SQLAlchemy connection for the duckdb dialect, as it does for sqlite.

    Why: GX's SqlAlchemyExecutionEngine.execute_query runs a query inside ``with engine.connect()`` and reads the
    result (``.fetchall()``) after that block has returned the connection to the pool. duckdb >= 2.0 streams
    results, and the pool's reset (rollback) on return discards them: every metric comes back empty
    (``IndexError: list index out of range``, GX issue #10738). For the dialects in
    ``_PERSISTED_CONNECTION_DIALECTS`` GX builds the engine on a ``StaticPool`` and keeps the connection open
    (``get_connection``), so the result is still readable. Adding duckdb to that tuple is the whole patch.
    ``_dialect_requires_persisted_connection`` reads ``.value`` of each entry and ``get_connection`` compares
    entries with the engine's dialect name, so the entry is a ``str`` that also has ``.value``.
    tests/test_gate.py::test_gx_duckdb_patch_keeps_results_readable fails if GX changes this mechanism.
    """
    from great_expectations.execution_engine import sqlalchemy_execution_engine as engine

    if any(d == "duckdb" for d in engine._PERSISTED_CONNECTION_DIALECTS):
        return

    class _DuckDBDialect(str):
        value = "duckdb"

    engine._PERSISTED_CONNECTION_DIALECTS = (*engine._PERSISTED_CONNECTION_DIALECTS, _DuckDBDialect("duckdb"))


_TEMPLATES = None  # a jinja2.BytecodeCache of GX's Data Docs templates, made by share_gx_templates


def share_gx_templates():
    """Let every GX Data Docs view of the process share one cache of compiled templates.

    Why: each of GX's views (``DefaultJinjaView``: a page, a section, a content block) makes its own jinja2
    ``Environment``, so every view compiles again the templates it renders: one gate's site compiled its 24
    templates 51 times, and every gate after it again; the three gates' Data Docs of a 1M bench night took
    ~1.8 s, ~0.8 s with the templates compiled once per process (two interleaved runs each). jinja2's bytecode
    cache is its own mechanism for this: a template is taken from it only if its source's checksum is the one
    compiled, so a changed template is compiled again. tests/test_gate.py::test_data_docs_compile_each_template_once_per_process fails if GX stops
    making its environments in ``DefaultJinjaView.__init__``."""
    global _TEMPLATES
    import jinja2
    from great_expectations.render.view.view import DefaultJinjaView

    if _TEMPLATES is None:
        class ProcessCache(jinja2.BytecodeCache):
            def __init__(self) -> None:
                self.codes: dict[str, bytes] = {}

            def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                code = self.codes.get(bucket.key)
                if code is not None:
                    bucket.bytecode_from_string(code)

            def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
                self.codes[bucket.key] = bucket.bytecode_to_string()

        _TEMPLATES = ProcessCache()
    cache = _TEMPLATES
    init = DefaultJinjaView.__init__
    if not getattr(init, "_clientbase_shared", False):
        def shared_init(self, *args, **kwargs) -> None:
            init(self, *args, **kwargs)
            self.env.bytecode_cache = cache

        shared_init._clientbase_shared = True  # type: ignore[attr-defined]
        DefaultJinjaView.__init__ = shared_init  # type: ignore[method-assign]
    return cache


def _json_default(value):
    return float(value) if isinstance(value, Decimal) else str(value)


def _describe(result) -> str:
    res = result.result or {}
    if res.get("observed_value") is not None:
        observed = res["observed_value"]
    elif res.get("unexpected_count") is not None:
        observed = {"unexpected_count": res["unexpected_count"],
                    "examples": res.get("partial_unexpected_list", [])[:5]}
    else:
        observed = None
    return json.dumps(observed, default=_json_default, ensure_ascii=False)


def _describe_unexpected_rows(con: duckdb.DuckDBPyConnection, result, dataset_sql: str) -> str:
    """An UnexpectedRowsExpectation standing in for a column-map one (``meta.check_name``): observed as the
    column-map expectation shows it, with the first values of the query's first column as examples."""
    count = (result.result or {}).get("observed_value") or 0
    examples = []
    if count:
        query = result.expectation_config.kwargs["unexpected_rows_query"].format(batch=f"({dataset_sql}) AS batch")
        examples = [row[0] for row in con.sql(f"SELECT * FROM ({query}) LIMIT 5").fetchall()]  # noqa: S608
    return json.dumps({"unexpected_count": count, "examples": examples}, default=_json_default,
                      ensure_ascii=False)


def run_gate(gate: str, run_id: str, datasets: dict[str, str | pl.DataFrame], suite: Suite,
             docs_dir: Path | None = None, *, con: duckdb.DuckDBPyConnection | None = None,
             scratch: dict[str, pl.DataFrame] | None = None) -> GateOutcome:
    """Validate ``datasets`` (name -> SQL query on ``con``, or a small polars frame) against ``suite``.

    ``scratch`` frames are copied into ``gate_scratch.<name>`` for the queries to join (e.g. this run's file
    hashes) without being validated. Without ``con`` the gate uses a private in-memory database.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from duckdb_engine import ConnectionWrapper
    from great_expectations.data_context.types.base import ProgressBarsConfig

    patch_gx_for_duckdb()
    own = con is None
    if con is None:
        con = duckdb.connect()
    # GX keeps the last context alive in a module global: the creator reaches the connection only through
    # ``handed``, emptied at the end, so no DuckDB object outlives the gate through GX
    handed: dict[str, list] = {"con": [con], "cursors": []}

    def cursor() -> ConnectionWrapper:
        # GX's connections are cursors of the caller's connection: the same database instance, so no second
        # opener of the warehouse file, and they see the gate_scratch catalog attached below
        cur = handed["con"][0].cursor()
        handed["cursors"].append(cur)
        return ConnectionWrapper(cur)

    context = gx.get_context(mode="ephemeral")
    # An ephemeral context keeps its configuration in memory and only writes copies of it to an in-memory store
    # that nothing reads; GX wrote one (a YAML dump of the whole configuration) after each data asset and batch
    # definition added (a small night's three gates: 54 dumps, 0.86 s). The gate's context does not keep them.
    context._save_project_config = lambda: None
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {SCRATCH}")
    source = None
    try:
        queries: dict[str, str] = {}
        for name, frame in {**(scratch or {}), **{k: v for k, v in datasets.items()
                                                  if isinstance(v, pl.DataFrame)}}.items():
            table = f"{SCRATCH}.{quote_ident(name)}"
            con.register("_gate_frame", frame.to_arrow())
            try:
                con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _gate_frame")  # noqa: S608
            finally:
                con.unregister("_gate_frame")
            queries[name] = f"SELECT * FROM {table}"  # noqa: S608
        queries.update({k: v for k, v in datasets.items() if isinstance(v, str)})

        # the URL only names the dialect: connections come from ``creator``
        source = context.data_sources.add_sql(name=f"{gate}_gate", connection_string="duckdb:///:memory:",
                                              kwargs={"creator": cursor})
        outcome = GateOutcome(gate=gate, passed=True)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        for dataset, expectations in suite.items():
            if dataset not in datasets:
                raise KeyError(f"gate {gate}: dataset {dataset} was not provided")
            batches = source.add_query_asset(name=dataset, query=queries[dataset]).add_batch_definition_whole_table(
                "all")
            # the suite is stored once, with its expectations: each add_expectation to a stored suite read it back
            # from the store and wrote it again whole (a small night's three gates: 83 adds, 0.75 s)
            gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{gate}.{dataset}", expectations=expectations))
            # a validation definition (not batch.validate) so the result is kept for the Data Docs. BASIC: the
            # unexpected count and first values, which is what a failure shows (GX's default, SUMMARY, also
            # counts the unexpected values per value and lists their rows: extra whole-table queries)
            validation = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{gate}.{dataset}", data=batches, suite=gx_suite),
            ).run(result_format="BASIC")
            for result in validation.results:
                config = result.expectation_config
                meta = config.meta or {}
                check = meta.get("check_name", config.type)
                column = (meta.get("column") or config.kwargs.get("column")
                          or ",".join(config.kwargs.get("column_list") or []) or None)
                observed = (_describe_unexpected_rows(con, result, queries[dataset]) if "check_name" in meta
                            else _describe(result))
                outcome.results.append({
                    "run_id": run_id, "gate": gate, "dataset": dataset, "check_name": check,
                    "column_name": column, "success": bool(result.success), "observed": observed,
                    "checked_at": now,
                })
                if not result.success:
                    outcome.passed = False
                    what = f"{dataset}.{column}" if column else dataset
                    outcome.failures.append(f"{what} {check} (observed {observed})")
        if docs_dir is not None:
            _write_data_docs(context, docs_dir)
        return outcome
    finally:
        _close(source, handed.pop("cursors"))
        handed.clear()
        if own:
            con.close()
        else:
            con.execute(f"DETACH DATABASE IF EXISTS {SCRATCH}")


def _close(source, cursors: list[duckdb.DuckDBPyConnection]) -> None:
    """Release every cursor GX was given, so no DuckDB object outlives the caller's connection."""
    if source is not None:
        engine = source._execution_engine
        if engine is not None and engine._connection is not None:
            engine._connection.close()  # the persisted connection (see patch_gx_for_duckdb)
        if engine is not None:
            engine.close()
        if source._engine is not None:
            source._engine.dispose()
    for cur in cursors:
        cur.close()


def _write_data_docs(context, docs_dir: Path) -> None:
    """Build the site beside ``docs_dir`` and swap it in, so a reader never sees half a site."""
    share_gx_templates()
    building = docs_dir.with_name(docs_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    context.add_data_docs_site(site_name="gate", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(building)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    context.build_data_docs(site_names=["gate"])
    shutil.rmtree(docs_dir, ignore_errors=True)
    building.rename(docs_dir)
