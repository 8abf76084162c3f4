"""Prefect flows: thin orchestration of the steps in ``flows/steps.py``.

    ingest -> gate(raw) -> stage -> gate(staged) -> prepare month partitions -> client_month per month
           -> as-of marts -> gate(marts) -> publish -> report

One task per I/O or checkpoint step. The per-file load tasks run ``ingest_workers`` at a time on threads of the
flow's process (the only process that may write the warehouse; they commit in inbox order). The per-month
client_month tasks are submitted to the flow's task runner (a thread pool by default, or a Dask cluster:
``make_task_runner``), everything else runs in the flow's process. Retries only on plain I/O (listing the inbox,
switching the marts link), never on a parse error or a failed gate. Tasks pass paths and small summaries, not
data frames, and skip Prefect's input hashing (``NO_CACHE``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from clientbase.config import ExecutionConfig, Settings, load_settings
from clientbase.errors import ClientbaseError, GateFailed, InboxError
from clientbase.report import write_report
from expectations.gate import preload as preload_gates
from flows import steps
from warehouse import publish
from warehouse.db import home_lock


def _io_retry(task_, task_run, state) -> bool:
    """Retry transient I/O errors only; our own errors (bad input, failed gates) are final."""
    try:
        state.result()
    except ClientbaseError:
        return False
    except OSError:
        return True
    except Exception:
        return False
    return False


discover = task(steps.discover, name="discover inbox", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
                retry_condition_fn=_io_retry)
ingest_file = task(steps.ingest_file, name="parse and load", cache_policy=NO_CACHE,
                   task_run_name="load {item.relative}")
gate_raw = task(steps.gate_raw, name="gate: raw", cache_policy=NO_CACHE)
stage = task(steps.stage, name="stage", cache_policy=NO_CACHE)
gate_staged = task(steps.gate_staged, name="gate: staged", cache_policy=NO_CACHE)
prepare_marts = task(steps.prepare_marts, name="prepare month partitions", cache_policy=NO_CACHE)
# one task per month, submitted to the flow's task runner (threads, or Dask workers): it reads and writes files only
build_client_month = task(steps.build_client_month, name="client_month", cache_policy=NO_CACHE,
                          task_run_name="client_month {job.month}", retries=2, retry_delay_seconds=2,
                          retry_condition_fn=_io_retry)
build_asof_marts = task(steps.build_asof_marts, name="build as-of marts", cache_policy=NO_CACHE)
gate_marts = task(steps.gate_marts, name="gate: marts", cache_policy=NO_CACHE)
report = task(write_report, name="report", cache_policy=NO_CACHE)
publish_marts = task(steps.publish_marts, name="publish", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
                     retry_condition_fn=_io_retry)


def make_task_runner(execution: ExecutionConfig) -> TaskRunner:
    """The task runner the settings ask for: a small thread pool in this process (default), a temporary local
    Dask cluster, or an existing Dask cluster at ``dask_address``."""
    if execution.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=execution.workers)
    from prefect_dask import DaskTaskRunner

    if execution.dask_address is not None:
        return DaskTaskRunner(address=execution.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": execution.workers,
                                          "threads_per_worker": execution.threads_per_worker,
                                          "processes": True, "dashboard_address": None})


def with_execution(flow_, execution: ExecutionConfig):
    """``flow_`` with the task runner of ``execution``; called once, where the settings are built."""
    return flow_.with_options(task_runner=make_task_runner(execution))


@contextmanager
def api_for_workers(execution: ExecutionConfig) -> Iterator[None]:
    """Make sure Dask workers report to the flow's Prefect API.

    prefect-dask sends the flow's Prefect settings with each task. Without ``PREFECT_API_URL`` the flow talks to
    Prefect's temporary in-process API, whose address is not in those settings, so every worker would start a
    temporary API of its own and record its task runs there. Here that temporary server is started up front and
    its address set for the run (local workers reach it on 127.0.0.1; remote ones need a real server).
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if execution.task_runner != "dask" or PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the same instance the flow's temporary client would start
    server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield
    finally:
        server.stop()


def run_with_execution(flow_, execution: ExecutionConfig, **parameters) -> dict[str, Any]:
    """Run ``flow_`` with the task runner of ``execution`` (the CLI's entry point). GX's import starts here, so
    it overlaps Prefect starting its API server and the flow run, not only the run's listing and loading."""
    preload_gates()
    with api_for_workers(execution):
        return with_execution(flow_, execution)(**parameters)


def load_files(settings: Settings, files: list[steps.InboxFile], run_id: str) -> list[steps.FileStats]:
    """One task per file, ``ingest_workers`` at a time on threads of this process (DuckDB allows one writing
    process, and the files' transactions commit one by one in inbox order: ``steps.commit_order``)."""
    logger = get_run_logger()
    order = steps.commit_order(settings)
    with ThreadPoolTaskRunner(max_workers=settings.execution.ingest_workers) as runner:
        futures = [runner.submit(ingest_file, {"settings": settings, "item": item, "run_id": run_id,
                                               "turn": order.turn(n, item.relative)})
                   for n, item in enumerate(files)]
        wait(futures)
    outcomes = [f.result(raise_on_failure=False) for f in futures]
    for n, loaded in enumerate(outcomes, start=1):
        if isinstance(loaded, steps.FileStats):  # the files before a failed one are loaded: say so
            logger.info("[%d/%d] %s (%s): %d rows, %d quarantined", n, len(files), loaded.path, loaded.reader,
                        loaded.rows_raw, loaded.rows_quarantined)
    return steps.loaded_files(outcomes)


def run_pipeline(settings: Settings, *, command: str, ingest: bool = True,
                 months: tuple[dt.date, dt.date] | None = None, as_of: dt.date | None = None) -> dict[str, Any]:
    """The body shared by every flow; the caller holds the HOME lock. Records the run in ``ops.run_log``."""
    logger = get_run_logger()
    # GX's import overlaps the inbox's listing and loading (a deployment's run starts here; after the CLI's
    # run_with_execution started it, the modules are loaded and this thread ends at once)
    preload_gates()
    run_id = steps.new_run_id()
    as_of = as_of or settings.effective_as_of
    summary: dict[str, Any] = {"run_id": run_id, "as_of": as_of.isoformat(), "command": command, "gates": {},
                               "flow_run_id": runtime.flow_run.id}
    started = steps.start_run_log(settings, run_id, command, as_of)
    version_dir: str | None = None
    published = False
    fields: dict[str, Any] = {}
    try:
        if ingest:
            files, skipped = discover(settings)
            logger.info("inbox: %d new file(s), %d already ingested", len(files), skipped)
            stats = load_files(settings, files, run_id)
            fields.update(input_files=steps.file_summaries(stats), files_new=len(stats),
                          rows_raw=sum(s.rows_raw for s in stats),
                          rows_quarantined=sum(s.rows_quarantined for s in stats))
        # this run's files and any that failed the gate before (a backfill too: it reads the raw layer)
        if gate_raw(settings, run_id) is not None:
            summary["gates"]["raw"] = "passed"
        stage_stats = stage(settings)
        logger.info("staged %d transactions (%d duplicates dropped), %d clients; staging %s", stage_stats.rows_staged,
                    stage_stats.duplicates, stage_stats.clients,
                    "kept" if stage_stats.skipped else "appended to" if stage_stats.appended
                    else "reclassified" if stage_stats.reclassified
                    else "refreshed from the CRM (bank rows kept)" if stage_stats.crm_refreshed else "rebuilt")
        fields.update(rows_staged=stage_stats.rows_staged, duplicates=stage_stats.duplicates)
        gate_staged(settings, run_id, stage_stats.new_part, stage_stats.bank_gated)
        summary["gates"]["staged"] = "passed"
        version_dir = str(publish.versions_root(settings.home) / run_id)  # discarded below if not published
        plan = prepare_marts(settings, run_id, as_of, months)
        futures = [build_client_month.submit(settings, job, plan.version_dir) for job in plan.jobs]
        wait(futures)  # every month task has finished before anything (even a failure) goes on
        built: list[steps.MonthResult] = [f.result() for f in futures]
        summary["months"] = months_summary = {
            "computed": [r.month for r in built if r.computed],
            "carried": sorted([r.month for r in built if not r.computed]
                              + [name.split("=", 1)[1].removesuffix(".parquet") for name in plan.kept
                                 if "=" in name]),
            "workers": sorted({r.worker for r in built}),
            # of the computed months' groups of clients: how many were built, how many taken over unchanged
            "groups": {"built": sum(r.groups[0] for r in built if r.computed),
                       "reused": sum(r.groups[1] for r in built if r.computed)},
        }
        logger.info("client_month: %d month(s) computed (%d groups of clients built, %d taken over), %d carried over "
                    "unchanged, on %d worker(s)", len(months_summary["computed"]), months_summary["groups"]["built"],
                    months_summary["groups"]["reused"], len(months_summary["carried"]), len(months_summary["workers"]))
        rows = build_asof_marts(settings, run_id, as_of, plan, built)
        fields["rows_marts"] = rows
        gate_marts(settings, run_id, version_dir, as_of,
                   [r.file for r in built if not r.computed] + list(plan.kept))
        summary["gates"]["marts"] = "passed"
        link = publish_marts(settings, version_dir)
        published = True
        logger.info("published marts version %s at %s", run_id, link)
        fields.update(status="published", published_version=run_id)
        summary["report"] = str(report(link, settings.reports_dir, as_of, settings.reporting_currency,
                                        settings.data_docs_dir))
        summary.update(marts_dir=str(link), rows_marts=rows, version=run_id, **{
            k: fields.get(k) for k in ("files_new", "rows_raw", "rows_quarantined", "rows_staged", "duplicates")})
        return summary
    except GateFailed as exc:
        summary["gates"][exc.gate] = "failed"
        fields.update(status="gate_failed", error=str(exc))
        raise
    except BaseException as exc:
        # after publishing (the report failed), the marts are live: the run log must say so
        fields.update(status="published" if published else "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if version_dir is not None and not published:
            publish.discard(Path(version_dir))
        steps.discard_scratch(settings, run_id)
        fields["gates"] = summary["gates"]
        steps.finish_run_log(settings, run_id, started, **fields)


@flow(name="clientbase-nightly", log_prints=True, task_runner=make_task_runner(ExecutionConfig()))
def nightly(home: str, inbox: str | None = None, as_of: dt.date | None = None, config_file: str | None = None,
            command: str = "run") -> dict[str, Any]:
    """Ingest what is new in the inbox and rebuild every mart as of ``as_of`` (default: today)."""
    settings = load_settings(Path(home), inbox=Path(inbox) if inbox else None, as_of=as_of,
                             config_file=Path(config_file) if config_file else None)
    with home_lock(settings.home):
        return run_pipeline(settings, command=command)


@flow(name="clientbase-backfill", log_prints=True, task_runner=make_task_runner(ExecutionConfig()))
def backfill(home: str, start: str, end: str, config_file: str | None = None) -> dict[str, Any]:
    """Recompute the marts for the months ``start``..``end`` (YYYY-MM) from the warehouse; other months are kept.

    Nothing is ingested. The as-of date is the last published run's, so the months outside the range and the
    recomputed ones describe the same state of the books.
    """
    settings = load_settings(Path(home), config_file=Path(config_file) if config_file else None)
    months = steps.month_range(start, end)
    with home_lock(settings.home):
        as_of = steps.last_published_as_of(settings)
        if as_of is None:
            raise InboxError(f"{settings.home}: nothing published yet; run 'clientbase run' before a backfill")
        return run_pipeline(settings, command="backfill", ingest=False, months=months, as_of=as_of)
