"""The DuckDB fast path for bank CSV gives exactly what the reference reader gives, row for row."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clientbase.errors import ParseError
from sources import bank_csv
from sources.columnar import PY_SPACE
from tests.test_fuzz import FUZZ
from warehouse.db import connect, query_polars
from warehouse.load import FileStats, ingest_bulk, ingest_records

FIXTURES = Path(__file__).parent / "fixtures" / "bank"
CSV_FILES = sorted([*(FIXTURES / "csv").glob("*.csv"), FIXTURES / "sparkasse_cp1252.csv",
                    FIXTURES / "generic_signed.csv"])
COLUMNS = ("record_number, own_account, booking_date, value_date, amount, currency, counterparty_name, "
           "counterparty_tax_id, counterparty_account, counterparty_bic, purpose, bank_reference, end_to_end_id, "
           "status")


def load_both(tmp_path: Path, path: Path):
    out = {}
    for mode in ("reference", "bulk"):
        stats = FileStats(path=path.name, sha256="h", reader="bank_csv")
        with connect(tmp_path / f"{mode}.duckdb") as con:
            if mode == "bulk":
                ingest_bulk(con, lambda c: bank_csv.load_bulk(c, path, file_hash="h", source_file=path.name,
                                                                run_id="r", scratch=tmp_path),
                            stats=stats, kind="bank", size_bytes=1, run_id="r")
            else:
                ingest_records(con, bank_csv.read(path), stats=stats, kind="bank", size_bytes=1, run_id="r")
            out[mode] = (
                stats,
                query_polars(con, f"SELECT {COLUMNS} FROM raw.bank_transaction ORDER BY record_number"),  # noqa: S608
                query_polars(con, "SELECT record_number, reason FROM ops.quarantine ORDER BY record_number"),
            )
    return out


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: p.name)
def test_bulk_equals_reference(tmp_path, path):
    both = load_both(tmp_path, path)
    ref_stats, ref_rows, ref_quarantine = both["reference"]
    bulk_stats, bulk_rows, bulk_quarantine = both["bulk"]
    assert ref_rows.height > 0
    assert bulk_rows.to_dicts() == ref_rows.to_dicts()
    assert bulk_quarantine.to_dicts() == ref_quarantine.to_dicts()
    assert (bulk_stats.records_in, bulk_stats.rows_raw, bulk_stats.rows_quarantined, bulk_stats.encoding) == (
        ref_stats.records_in, ref_stats.rows_raw, ref_stats.rows_quarantined, ref_stats.encoding)


def test_bulk_rejections_match_reference_wording(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("account,date,debit,credit,currency,counterparty\n"
                    "A1,2025-03-03,1.00,2.00,EUR,X\n"      # both filled
                    "A1,2025-03-03,,,EUR,X\n"               # neither
                    "A1,03.03.2025,,5.00,EUR,X\n"           # bad date
                    "A1,2025-03-03,,5.123456,EUR,X\n"       # too many decimals
                    "A1,2025-03-03,,abc,EUR,X\n"            # not a number
                    "A1,2025-03-03,,1e5,EUR,X\n"            # an exponent is not a bank amount either
                    "A1,2025-03-03,x,12.00,EUR,X\n"         # both filled, one unreadable: read first (fuzzing)
                    "A1,2025-03-04,,7.50,eur,Y\n", encoding="utf-8")   # fine, currency upper-cased
    both = load_both(tmp_path, path)
    assert both["bulk"][2].to_dicts() == both["reference"][2].to_dicts()
    assert both["bulk"][2]["reason"].to_list() == [
        "exactly one of the debit and credit columns must be filled",
        "exactly one of the debit and credit columns must be filled",
        "date '03.03.2025' does not match the format '%Y-%m-%d'",
        "amount '5.123456' has more than 5 decimals",
        "amount 'abc' is not a number",
        "amount '1e5' is not a number",
        "amount 'x' is not a number",
    ]
    assert both["bulk"][1].select("amount", "currency").rows() == both["reference"][1].select(
        "amount", "currency").rows()


def test_quoted_line_breaks_in_a_purpose(tmp_path):
    """Found by fuzzing: DuckDB's parallel scanner refused quoted line breaks with padded rows."""
    path = tmp_path / "multiline.csv"
    path.write_text('account,date,debit,credit,currency,counterparty,description\n'
                    'DE02120300000000202051,2025-03-03,,10.00,EUR,Acme,"Invoice 17\nsecond line"\n'
                    'DE02120300000000202051,2025-03-04,,12.00,EUR,Beta\n', encoding="utf-8")
    both = load_both(tmp_path, path)
    assert both["bulk"][1].to_dicts() == both["reference"][1].to_dicts()
    assert both["bulk"][1]["purpose"].to_list() == ["Invoice 17 second line", None]


def test_a_file_duckdb_cannot_read_is_a_clean_error(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('account,date,debit,credit,currency,counterparty,description\n'
                    'DE02120300000000202051,2025-03-03,,10.00,EUR,"Acme\x01,"",x\n'
                    'DE02120300000000202051,2025-03-04,,12.00,EUR,Beta,"unterminated\n', encoding="utf-8")
    stats = FileStats(path=path.name, sha256="h", reader="bank_csv")
    with connect(tmp_path / "w.duckdb") as con, pytest.raises(ParseError) as err:
        ingest_bulk(con, lambda c: bank_csv.load_bulk(c, path, file_hash="h", source_file=path.name, run_id="r",
                                                      scratch=tmp_path),
                    stats=stats, kind="bank", size_bytes=1, run_id="r")
    assert str(err.value).startswith(f"{path}: the CSV cannot be read as a generic_debit_credit export (")
    assert "check that the file is complete and unedited" in str(err.value)


def test_blank_rows_numbering_and_whitespace_match_reference(tmp_path):
    """Blank rows (also with an empty first column), folded whitespace and record numbers after blank rows."""
    path = tmp_path / "spaced.csv"
    path.write_text('account,date,debit,credit,currency,counterparty,description\n'
                    '\n'
                    ' , ,,  ,,,\n'
                    'DE02120300000000202051,2025-03-03,,10.00,EUR,"Acme   Ltd","a  b\tc"\n'
                    ',2025-03-04,,12.00,EUR,Beta,first column empty\n'
                    ',,,,,,\n'
                    '  DE02120300000000202051  ,2025-03-05,1.5,,eur, Gamma , x \n'
                    ',,,,,,"only the last"\n'
                    '\u00a0DE02120300000000202051,2025-03-07,,"1 000.25",EUR,Müller  ,\u00a0ü\u00a0\n'
                    # ASCII values but for one Unicode space at an end (trimmed), and a tab (not a space)
                    'DE02120300000000202051,2025-03-08,,2.00,EUR,Delta\u202f,\u2003Epsilon\u3000\n'
                    'DE02120300000000202051 ,2025-03-09,,3.00,EUR,\tZeta,x\t\n'
                    '\t,\t,,\x0b,,\u3000,\n'  # whitespace only (str.split's set): blank
                    'DE02120300000000202051,2025-03-10,,4.00,EUR,Eta\u00a0\u2009Theta,a\x1cb\n',
                    encoding="utf-8")
    both = load_both(tmp_path, path)
    assert both["bulk"][1].to_dicts() == both["reference"][1].to_dicts()
    assert both["bulk"][2].to_dicts() == both["reference"][2].to_dicts()
    assert both["bulk"][1]["record_number"].to_list() == [1, 3, 5, 6, 7, 8]  # blank rows are not records
    assert both["bulk"][1].select("counterparty_name", "purpose").rows()[-3:] == [
        ("Delta", "Epsilon"), ("Zeta", "x"), ("Eta Theta", "a b")]


# text of names and purposes: Python's whitespace (every character str.split() splits on), letters, umlauts
TEXT = st.text(alphabet=st.sampled_from([*PY_SPACE, "a", "Z", "ü", "Я", "1", ",", '"', "-"]), max_size=8)


@FUZZ
@given(rows=st.lists(st.tuples(
    st.sampled_from(["DE02120300000000202051", " DE02 1203\t", "\u00a0", ""]),
    st.sampled_from(["2025-03-03", "\t2025-03-04 ", "2025-3-5", ""]),
    st.sampled_from(["", "1.00", " 2.5\u00a0", "x"]), st.sampled_from(["", "12.00", "\u20037"]),
    st.sampled_from(["EUR", " eur\x0b", ""]), TEXT, TEXT), max_size=6), ending=st.sampled_from(["\n", "\r\n"]))
def test_random_values_parity(tmp_path, rows, ending):
    """Whatever whitespace, blank fields and bad values the rows hold, both paths load and quarantine the same."""
    def cell(value):
        return '"' + value.replace('"', '""') + '"'
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # each example its own warehouses
    path = folder / "statement.csv"
    path.write_text("account,date,debit,credit,currency,counterparty,description" + ending
                    + "".join(",".join(cell(v) for v in row) + ending for row in rows), encoding="utf-8", newline="")
    both = load_both(folder, path)
    assert both["bulk"][1].to_dicts() == both["reference"][1].to_dicts()
    assert both["bulk"][2].to_dicts() == both["reference"][2].to_dicts()
    ref, bulk = both["reference"][0], both["bulk"][0]
    assert (bulk.records_in, bulk.rows_raw, bulk.rows_quarantined) == (ref.records_in, ref.rows_raw,
                                                                       ref.rows_quarantined)
