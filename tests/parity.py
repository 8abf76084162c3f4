"""A bank reader's fast path (``load_bulk``) against its reference reader (``read``): load one file both ways into
fresh scratch warehouses and compare every table row for row."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from warehouse.db import connect, query_polars
from warehouse.load import FileStats, ingest_bulk, ingest_records


def load(reader: ModuleType, tmp_path: Path, path: Path, mode: str) -> dict:
    """Stats, raw rows, quarantine and balances of ``path`` loaded by the fast path (``mode='bulk'``) or the
    reference reader; balances ordered by every column (a statement without entries shares its record number)."""
    stats = FileStats(path=path.name, sha256="h", reader=reader.NAME)
    with connect(tmp_path / f"{mode}.duckdb") as con:
        if mode == "bulk":
            ingest_bulk(con, lambda c: reader.load_bulk(c, path, file_hash="h", source_file=path.name, run_id="r",
                                                        scratch=tmp_path),
                        stats=stats, kind="bank", size_bytes=1, run_id="r")
        else:
            ingest_records(con, reader.read(path), stats=stats, kind="bank", size_bytes=1, run_id="r")
        return {
            "stats": (stats.records_in, stats.rows_raw, stats.rows_quarantined, stats.encoding),
            "rows": query_polars(con, "SELECT * FROM raw.bank_transaction ORDER BY record_number").to_dicts(),
            "quarantine": query_polars(con, "SELECT * FROM ops.quarantine ORDER BY record_number").to_dicts(),
            "balances": query_polars(con, "SELECT * FROM raw.statement_balance ORDER BY ALL").to_dicts(),
        }


def both(reader: ModuleType, tmp_path: Path, path: Path) -> dict:
    """Load ``path`` both ways (scratch warehouses of an earlier call removed first), assert every table is the
    same, and return the reference's."""
    for db in tmp_path.glob("*.duckdb"):
        db.unlink()
    reference, bulk = load(reader, tmp_path, path, "reference"), load(reader, tmp_path, path, "bulk")
    for part in ("stats", "rows", "quarantine", "balances"):
        assert bulk[part] == reference[part], part
    return reference
