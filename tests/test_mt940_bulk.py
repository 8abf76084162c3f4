"""The set-based path for MT940 (sources/mt940_bulk.py) gives exactly what the reference reader gives, row for
row: raw rows (every column), quarantine rows (record, line, reason, raw text), statement balances and file
errors."""

from pathlib import Path

import pytest

from clientbase.errors import ParseError
from sources import mt940, mt940_bulk
from warehouse.db import connect, query_polars
from warehouse.load import FileStats, ingest_bulk, ingest_records

FIXTURES = Path(__file__).parent / "fixtures" / "bank"


def load(tmp_path: Path, path: Path, mode: str):
    stats = FileStats(path=path.name, sha256="h", reader=mt940.NAME)
    with connect(tmp_path / f"{mode}.duckdb") as con:
        if mode == "bulk":
            ingest_bulk(con, lambda c: mt940.load_bulk(c, path, file_hash="h", source_file=path.name, run_id="r",
                                                       scratch=tmp_path),
                        stats=stats, kind="bank", size_bytes=1, run_id="r")
        else:
            ingest_records(con, mt940.read(path), stats=stats, kind="bank", size_bytes=1, run_id="r")
        return {
            "stats": (stats.records_in, stats.rows_raw, stats.rows_quarantined, stats.encoding),
            "rows": query_polars(con, "SELECT * FROM raw.bank_transaction ORDER BY record_number").to_dicts(),
            "quarantine": query_polars(con, "SELECT * FROM ops.quarantine ORDER BY record_number").to_dicts(),
            "balances": query_polars(con, "SELECT * FROM raw.statement_balance ORDER BY ALL").to_dicts(),
        }


def both(tmp_path: Path, path: Path):
    for db in tmp_path.glob("*.duckdb"):
        db.unlink()
    reference, bulk = load(tmp_path, path, "reference"), load(tmp_path, path, "bulk")
    for part in ("stats", "rows", "quarantine", "balances"):
        assert bulk[part] == reference[part], part
    return reference


@pytest.mark.parametrize("name", ["mt940_de_sparkasse.sta", "mt940_nl_rabobank.swi", "mt942_ru_cp1251.txt"])
def test_fixtures_equal_reference(tmp_path, name):
    ref = both(tmp_path, FIXTURES / name)
    assert ref["rows"]
