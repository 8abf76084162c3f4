"""The benchmark's input generator (bench/pipeline.py): deterministic, the asked row counts, readable inputs.

No timing here: the benchmark itself is run by hand (README, "Benchmarks").
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from bench import pipeline
from sources import registry

N = 5_000


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    pipeline.generate(tmp_path / "a", N, seed=7)
    pipeline.generate(tmp_path / "b", N, seed=7)
    pipeline.generate(tmp_path / "c", N, seed=8)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_row_counts_and_layout(tmp_path):
    n = 40_000  # enough rows per month for re-exported duplicates (0.2%)
    counts = pipeline.generate(tmp_path, n, seed=1)
    bank = sorted((tmp_path / "inbox" / "bank").glob("*.csv"))
    assert len(bank) == 36  # one statement per month, 2023-11 .. 2026-10
    history = pl.concat([pl.read_csv(p, infer_schema=False) for p in bank])
    increment = pl.read_csv(tmp_path / "increment" / "bank" / f"bank_{pipeline.AS_OF}.csv", infer_schema=False)
    assert history.height == counts["bank_rows"] and increment.height == counts["increment_rows"]
    assert history.height + increment.height == n  # every generated transaction is in exactly one file
    assert increment["booking_date"].unique().to_list() == [str(pipeline.AS_OF)]
    assert history["booking_date"].max() < str(pipeline.AS_OF)
    both = pl.concat([history, increment])
    assert both.height - both["reference"].n_unique() == counts["duplicates"] > 0  # re-exported rows only
    crm = tmp_path / "inbox" / "crm"
    assert pl.read_csv(crm / "clients.csv").height == counts["clients"]
    invoices = pl.read_csv(crm / "invoices.csv", infer_schema=False)
    assert invoices.height == counts["invoices"] and invoices["invoice_id"].n_unique() == invoices.height
    assert pl.read_csv(crm / "activities.csv").height == counts["activities"] > 0
    assert pl.read_csv(crm / "tickets.csv").height == counts["tickets"]


def test_bank_files_take_the_bulk_csv_path(tmp_path):
    pipeline.generate(tmp_path, N, seed=1)
    path = next((tmp_path / "inbox" / "bank").glob("*.csv"))
    reader = registry.detect(path, "bank")
    assert hasattr(reader, "load_bulk")  # the set-based DuckDB fast path, not the Python record reader


def test_months_cover_the_history():
    months = pipeline._months()
    assert months[0] == pipeline.START and months[-1] == dt.date(2026, 10, 1) and len(months) == 36


def test_crm_dump_is_the_clients_with_one_change(tmp_path):
    pipeline.generate(tmp_path, N, seed=1)
    folder = pipeline.crm_dump(tmp_path)
    dump = folder / "crm" / f"clients_{pipeline.AS_OF + dt.timedelta(days=1)}.csv"
    assert [p.name for p in folder.rglob("*") if p.is_file()] == [dump.name]
    before = pl.read_csv(tmp_path / "inbox" / "crm" / "clients.csv", infer_schema=False)
    after = pl.read_csv(dump, infer_schema=False)
    assert after.columns == before.columns and after.height == before.height
    changed = before.with_row_index().join(after.with_row_index(), on="index").filter(
        pl.col("region") != pl.col("region_right"))
    assert changed.select("client_id", "region_right").rows() == [(before["client_id"][-1], "XX")]
    assert registry.detect(dump, "crm").NAME == "crm"
    written = dump.stat().st_mtime_ns
    assert pipeline.crm_dump(tmp_path) == folder and dump.stat().st_mtime_ns == written  # written once, then kept
