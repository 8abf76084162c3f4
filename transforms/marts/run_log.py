"""run_log: what every run did — inputs, row counts per layer, gate outcomes, duration.

Grain: one row per pipeline run (including failed runs), newest first.
"""

from __future__ import annotations

import polars as pl

NAME = "run_log"
GRAIN = "one row per pipeline run (failed runs included), newest first"
KEY = ("run_id",)
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "run_id": (pl.String(), "Run id (UTC start time plus a random suffix); also the mart version it published"),
    "command": (pl.String(), "run | backfill | demo"),
    "as_of": (pl.Date(), "Last day included in the marts"),
    "started_at": (pl.Datetime("us"), "Start, UTC"),
    "finished_at": (pl.Datetime("us"), "End, UTC"),
    "duration_s": (pl.Float64(), "Wall-clock seconds"),
    "status": (pl.String(), "published | gate_failed | failed | killed (found dead by the next run) | running"),
    "input_files": (pl.String(), "JSON list of files ingested by this run: path, sha256, reader, rows"),
    "files_new": (pl.Int32(), "Files ingested by this run (0 when the inbox had nothing new)"),
    "rows_raw": (pl.Int64(), "Raw rows added by this run"),
    "rows_quarantined": (pl.Int64(), "Records this run sent to quarantine"),
    "rows_staged": (pl.Int64(), "Staged bank transactions after deduplication (whole history)"),
    "duplicates": (pl.Int64(), "Raw bank rows dropped as duplicates of another row (whole history)"),
    "rows_marts": (pl.String(), "JSON {mart: rows}"),
    "gates": (pl.String(), "JSON {gate: passed | failed}"),
    "published_version": (pl.String(), "Mart version published, null if nothing was published"),
    "error": (pl.String(), "The error that stopped the run, if any"),
}


def build(run_log: pl.LazyFrame) -> pl.LazyFrame:
    return run_log.select(list(SCHEMA)).cast({c: t for c, (t, _) in SCHEMA.items()}).sort(
        "started_at", descending=True)
