"""Prefect flows: thin orchestration of the steps in ``flows/steps.py``.

    ingest -> gate(raw) -> stage -> gate(staged) -> build marts -> gate(marts) -> publish

One task per I/O or checkpoint step. Retries only on plain I/O (listing the inbox, switching the marts link),
never on a parse error or a failed gate. Tasks pass paths and small summaries, not data frames, and skip
Prefect's input hashing (``NO_CACHE``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clientbase.config import Settings, load_settings
from clientbase.errors import ClientbaseError, GateFailed, InboxError
from clientbase.report import write_report
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
build_marts = task(steps.build_marts, name="build marts", cache_policy=NO_CACHE)
gate_marts = task(steps.gate_marts, name="gate: marts", cache_policy=NO_CACHE)
report = task(write_report, name="report", cache_policy=NO_CACHE)
publish_marts = task(steps.publish_marts, name="publish", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
                     retry_condition_fn=_io_retry)


def run_pipeline(settings: Settings, *, command: str, ingest: bool = True,
                 months: tuple[dt.date, dt.date] | None = None, as_of: dt.date | None = None) -> dict[str, Any]:
    """The body shared by every flow; the caller holds the HOME lock. Records the run in ``ops.run_log``."""
    logger = get_run_logger()
    run_id = steps.new_run_id()
    as_of = as_of or settings.effective_as_of
    summary: dict[str, Any] = {"run_id": run_id, "as_of": as_of.isoformat(), "command": command, "gates": {}}
    started = steps.start_run_log(settings, run_id, command, as_of)
    version_dir: str | None = None
    published = False
    fields: dict[str, Any] = {}
    try:
        if ingest:
            files, skipped = discover(settings)
            logger.info("inbox: %d new file(s), %d already ingested", len(files), skipped)
            stats = []
            for n, item in enumerate(files, start=1):
                loaded = ingest_file(settings, item, run_id)
                logger.info("[%d/%d] %s (%s): %d rows, %d quarantined", n, len(files), loaded.path,
                            loaded.reader, loaded.rows_raw, loaded.rows_quarantined)
                stats.append(loaded)
            fields.update(input_files=steps.file_summaries(stats), files_new=len(stats),
                          rows_raw=sum(s.rows_raw for s in stats),
                          rows_quarantined=sum(s.rows_quarantined for s in stats))
            if stats:
                gate_raw(settings, run_id, [s.sha256 for s in stats])
                summary["gates"]["raw"] = "passed"
        stage_stats = stage(settings)
        logger.info("staged %d transactions (%d duplicates dropped), %d clients", stage_stats.rows_staged,
                    stage_stats.duplicates, stage_stats.clients)
        fields.update(rows_staged=stage_stats.rows_staged, duplicates=stage_stats.duplicates)
        gate_staged(settings, run_id)
        summary["gates"]["staged"] = "passed"
        version_dir, rows = build_marts(settings, run_id, as_of, months)
        fields["rows_marts"] = rows
        gate_marts(settings, run_id, version_dir, as_of)
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
        fields["gates"] = summary["gates"]
        steps.finish_run_log(settings, run_id, started, **fields)


@flow(name="clientbase-nightly", log_prints=True)
def nightly(home: str, inbox: str | None = None, as_of: dt.date | None = None, config_file: str | None = None,
            command: str = "run") -> dict[str, Any]:
    """Ingest what is new in the inbox and rebuild every mart as of ``as_of`` (default: today)."""
    settings = load_settings(Path(home), inbox=Path(inbox) if inbox else None, as_of=as_of,
                             config_file=Path(config_file) if config_file else None)
    with home_lock(settings.home):
        return run_pipeline(settings, command=command)


@flow(name="clientbase-backfill", log_prints=True)
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
