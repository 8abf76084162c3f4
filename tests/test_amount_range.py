"""Amounts beyond what the warehouse holds (``DECIMAL(23, 5)``: 18 digits before the point) are quarantined with
a reason on every reader and both paths, never a crash of the load (found by the atheris fuzzer: a CSV amount of
58 digits stopped the DuckDB fast path with a conversion error); a statement's entries total may need more digits
than one amount and is stored as ``DECIMAL(38, 5)``, also in warehouses created before."""

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from sources import registry
from tests import parity
from warehouse.db import connect, ensure_schema, schema_digest

BANK = Path(__file__).parent / "fixtures" / "bank"
# (fixture, encoding, amount as written in it, the same amount's spelling pattern, decimal mark)
FORMATS = {
    "csv": ("generic_signed.csv", "utf-8", "-12.5", "{}", "."),
    "1c": ("1c_sberbank_cp1251.txt", "cp1251", "Сумма=500.50", "Сумма={}", "."),
    "camt": ("camt053_v08_pty.xml", "utf-8", ">120.00<", ">{}<", "."),
    "ofx": ("ofx2_xml.ofx", "utf-8", "-12.00", "-{}", "."),
}


def _with_amount(tmp_path: Path, fmt: str, digits: str) -> Path:
    name, encoding, written, pattern, mark = FORMATS[fmt]
    text = (BANK / name).read_bytes().decode(encoding)
    assert text.count(written) == 1
    tmp_path.mkdir()
    path = tmp_path / name
    path.write_bytes(text.replace(written, pattern.format(f"{digits}{mark}00")).encode(encoding))
    return path


def _without(row: dict, keys: set[str]) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def _load(tmp_path: Path, path: Path) -> dict:
    """The reference reader's tables; the fast path, where the reader has one, gives the same (bank CSV's fast
    path leaves ``source_line`` empty: the record number is the line)."""
    reader = registry.detect(path, "bank")
    reference = parity.load(reader, tmp_path, path, "reference")
    if hasattr(reader, "load_bulk"):
        bulk = parity.load(reader, tmp_path, path, "bulk")
        unset = {"source_line"} if reader.NAME == "bank_csv" else set()
        assert bulk["stats"] == reference["stats"]
        for part in ("rows", "quarantine", "balances"):
            assert [_without(row, unset) for row in bulk[part]] == [_without(row, unset) for row in reference[part]]
    return reference


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("digits", ["1" + "0" * 18, "6" * 58])
def test_an_amount_beyond_18_digits_is_quarantined(tmp_path, fmt, digits):
    fine = _load(tmp_path / "fine", _with_amount(tmp_path / "fine", fmt, "0" * 3 + "9" * 18))
    big = _load(tmp_path / "big", _with_amount(tmp_path / "big", fmt, digits))
    numbers = {row["record_number"] for row in fine["rows"]} - {row["record_number"] for row in big["rows"]}
    assert len(numbers) == 1  # exactly the changed entry left raw
    assert Decimal("9" * 18) in {abs(row["amount"]) for row in fine["rows"]}  # 18 digits (and leading zeros) fit
    [reason] = [q["reason"] for q in big["quarantine"] if q["record_number"] in numbers]
    assert reason.endswith(f"{digits}.00' has more than 18 digits before the decimal point")
    assert big["stats"][2] == fine["stats"][2] + 1  # one more quarantined row, nothing else changed
    assert big["stats"][0] == fine["stats"][0]


def test_an_entries_total_beyond_one_amount_is_stored(tmp_path):
    """Two credits of 9 * 10^17: the statement's total has 19 digits, more than one amount may have."""
    text = (BANK / "camt053_v08_pty.xml").read_text(encoding="utf-8")
    entry = text[text.index("<Ntry>"):text.index("</Ntry>") + len("</Ntry>")]
    big = entry.replace(">120.00<", ">900000000000000000.00<")
    path = tmp_path / "two.xml"
    path.write_text(text.replace(entry, big + big.replace("LV-0001", "LV-0002")), encoding="utf-8")
    tables = _load(tmp_path, path)
    assert [row["amount"] for row in tables["rows"]] == [Decimal("9E17")] * 2
    assert [row["entries_total"] for row in tables["balances"]] == [Decimal("1.8E18")]


@pytest.mark.parametrize("marker", ["DROP TABLE ops.schema_version",  # from before the schema version marker
                                    "UPDATE ops.schema_version SET version = 'older'"])  # from an older release
def test_an_older_warehouse_gets_the_wider_entries_total(tmp_path, marker):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        ensure_schema(con)
        con.execute("ALTER TABLE raw.statement_balance ALTER COLUMN entries_total TYPE DECIMAL(23, 5)")  # as before
        con.execute(marker)
        con.execute("INSERT INTO raw.statement_balance VALUES ('h', 'f', 1, 'A', 'S', DATE '2025-03-01', 1, 2, "
                    "'EUR', 1.5)")
    with connect(path) as con:
        assert con.execute("SELECT data_type FROM duckdb_columns() WHERE table_name = 'statement_balance' "
                           "AND column_name = 'entries_total'").fetchall() == [("DECIMAL(38,5)",)]
        assert con.execute("SELECT entries_total FROM raw.statement_balance").fetchall() == [(Decimal("1.5"),)]
        assert con.execute("SELECT version FROM ops.schema_version").fetchall() == [(schema_digest(),)]


def test_a_warehouse_at_this_schema_is_not_altered_at_connect(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    with connect(path) as con:
        con.execute("ALTER TABLE raw.statement_balance ALTER COLUMN entries_total TYPE DECIMAL(23, 5)")
    with connect(path) as con:  # the marker says the schema is current: no DDL ran (it would widen the column)
        assert con.execute("SELECT data_type FROM duckdb_columns() WHERE table_name = 'statement_balance' "
                           "AND column_name = 'entries_total'").fetchall() == [("DECIMAL(23,5)",)]
