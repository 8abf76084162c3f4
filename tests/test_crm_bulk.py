"""The DuckDB fast path for CRM CSV dumps gives exactly what the reference reader gives, row for row."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clientbase.config import load_settings
from clientbase.errors import ClientbaseError, ParseError
from sources import crm, crm_bulk
from tests.test_fuzz import FUZZ, corrupted_fixture
from warehouse.db import connect, query_polars
from warehouse.load import FileStats, ingest_bulk, ingest_records

PRESETS = Path(__file__).parent / "fixtures" / "crm" / "presets"
FIXTURES = sorted(p for p in (Path(__file__).parent / "fixtures" / "crm").rglob("*") if p.is_file())
CSV_FIXTURES = [p for p in FIXTURES if p.suffix == ".csv"]
_counter = itertools.count()


def load_one(tmp_path: Path, path: Path, mode: str, user_presets=()):
    """(stats, raw rows per entity, quarantine) for the reference reader or the fast path."""
    stats = FileStats(path=path.name, sha256="h", reader="crm")
    with connect(tmp_path / f"{mode}{next(_counter)}.duckdb") as con:
        if mode == "bulk":
            ingest_bulk(con, lambda c: crm.load_bulk(c, path, file_hash="h", source_file=path.name, run_id="r",
                                                     scratch=tmp_path, user_presets=user_presets),
                        stats=stats, kind="crm", size_bytes=1, run_id="r")
        else:
            ingest_records(con, crm.read(path, user_presets=user_presets), stats=stats, kind="crm", size_bytes=1,
                           run_id="r")
        tables = {e: query_polars(con, f'SELECT * FROM raw."crm_{e}" ORDER BY record_number').to_dicts()  # noqa: S608
                  for e in crm.ENTITIES}
        quarantine = query_polars(con, "SELECT file_hash, source_file, record_number, source_line, reason, "
                                       "raw_record, run_id FROM ops.quarantine ORDER BY record_number").to_dicts()
    return stats, {e: rows for e, rows in tables.items() if rows}, quarantine


def load_both(tmp_path: Path, path: Path, user_presets=()):
    return {mode: load_one(tmp_path, path, mode, user_presets) for mode in ("reference", "bulk")}


def outcomes(tmp_path: Path, path: Path):
    """Each path's result, or its error message."""
    out = {}
    for mode in ("reference", "bulk"):
        try:
            out[mode] = load_one(tmp_path, path, mode)
        except ClientbaseError as exc:
            out[mode] = str(exc)
    return out


def assert_same(both):
    ref_stats, ref_tables, ref_quarantine = both["reference"]
    bulk_stats, bulk_tables, bulk_quarantine = both["bulk"]
    assert bulk_tables == ref_tables
    assert bulk_quarantine == ref_quarantine
    assert (bulk_stats.records_in, bulk_stats.rows_raw, bulk_stats.rows_quarantined, bulk_stats.encoding) == (
        ref_stats.records_in, ref_stats.rows_raw, ref_stats.rows_quarantined, ref_stats.encoding)
    return ref_tables, ref_quarantine


def assert_same_outcome(outcome):
    """Both paths failed with the same message, or both loaded the same rows."""
    if isinstance(outcome["reference"], str) or isinstance(outcome["bulk"], str):
        assert outcome["bulk"] == outcome["reference"]
    else:
        assert_same(outcome)


@pytest.fixture
def fast_only(monkeypatch):
    """Fail instead of falling back: the file must go through DuckDB."""
    def refuse(*args, **kwargs):
        raise AssertionError("fell back to the reference reader")
    monkeypatch.setattr(crm_bulk, "RecordWriter", refuse)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_every_crm_fixture_equals_reference(tmp_path, path):
    tables, _ = assert_same(load_both(tmp_path, path))
    assert sum(len(rows) for rows in tables.values()) > 0


@pytest.mark.parametrize("path", CSV_FIXTURES, ids=lambda p: p.name)
def test_csv_fixtures_take_the_fast_path(tmp_path, path, fast_only):
    tables, _ = assert_same(load_both(tmp_path, path))
    assert sum(len(rows) for rows in tables.values()) > 0


def write(tmp_path: Path, name: str, body: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(body.encode(encoding))
    return path


def test_quoted_line_breaks_bom_unicode_spaces_and_extra(tmp_path, fast_only):
    path = write(tmp_path, "kunden.csv",
                 "\ufeffclient_id;name;tax_id;Notiz;Farbe\r\n"
                 'C1;"Müller\r\n  GmbH";DE136695976;"zwei\nZeilen";blau\r\n'
                 "C2;\u00a0Baltic\u2003 Logistics\u00a0;;  ;\r\n"
                 'C3;"Quote ""q"" \\ back";;"tab\there \x01";\r\n', encoding="utf-8")
    tables, quarantine = assert_same(load_both(tmp_path, path))
    rows = tables["clients"]
    assert [r["name"] for r in rows] == ["Müller GmbH", "Baltic Logistics", 'Quote "q" \\ back']
    assert [r["tax_id"] for r in rows] == ["DE136695976", None, None]
    assert [r["record_number"] for r in rows] == [1, 2, 3]
    assert json.loads(rows[0]["extra"]) == {"Notiz": "zwei\nZeilen", "Farbe": "blau"}
    assert rows[1]["extra"] == '{"Notiz": "  "}'  # raw value, only '' is left out
    assert rows[2]["extra"] == '{"Notiz": "tab\\there \\u0001"}'
    assert quarantine == []


def test_cp1251_dump_is_transcoded(tmp_path, fast_only):
    path = write(tmp_path, "clients.csv", "client_id;name;region\n77;ООО Ромашка;Москва\n78;ИП Петров;Казань\n",
                 encoding="cp1251")
    both = load_both(tmp_path, path)
    tables, _ = assert_same(both)
    assert both["bulk"][0].encoding == "cp1251"
    assert [(r["name"], r["region"]) for r in tables["clients"]] == [("ООО Ромашка", "Москва"),
                                                                   ("ИП Петров", "Казань")]


def test_empty_trailing_columns_blank_rows_and_required_fields(tmp_path, fast_only):
    path = write(tmp_path, "invoices.csv",
                 "invoice_id,client_id,issue_date,amount,currency,,\n"
                 "I1,C1,2025-03-01,100.00,EUR,,\n"
                 ",,,,,,\n"            # blank: skipped, no record number
                 "\n"
                 "I2,  ,2025-03-02,5,EUR,,x\n"   # client_id only whitespace: quarantined
                 "I3,C3,2025-03-03,,,,\n"       # amount and currency empty: quarantined
                 "I4,C4,2025-03-04,7,EUR,,\n")
    tables, quarantine = assert_same(load_both(tmp_path, path))
    assert [(r["record_number"], r["invoice_id"], r["extra"]) for r in tables["invoices"]] == [
        (1, "I1", None), (4, "I4", None)]
    assert [(q["record_number"], q["source_line"], q["reason"]) for q in quarantine] == [
        (2, None, "required field(s) client_id empty (preset canonical_invoices)"),
        (3, None, "required field(s) amount, currency empty (preset canonical_invoices)")]
    assert json.loads(quarantine[0]["raw_record"]) == {
        "invoice_id": "I2", "client_id": "  ", "issue_date": "2025-03-02", "amount": "5", "currency": "EUR", "": "x"}


def test_duplicated_header_names_take_the_last_column(tmp_path, fast_only):
    path = write(tmp_path, "managers.csv", "manager_id,name,note,department,note,name\n"
                                           "M1,first,n1,Sales,n2,Anna Berg\n")
    tables, _ = assert_same(load_both(tmp_path, path))
    (row,) = tables["managers"]
    assert (row["name"], row["department"], row["extra"]) == ("Anna Berg", "Sales", '{"note": "n2"}')


def test_preset_transforms_maps_defaults_and_their_errors(tmp_path, fast_only):
    path = write(tmp_path, "calls.csv",
                 '"Record ID","Activity date","Call duration","Associated Company IDs","Activity assigned to","_preset"\n'
                 '"1","2025-03-04 10:15","754000","5210843001;5210843099","Anna Berg","mine"\n'
                 '"2","2025-03-05 14:00","abc","5210843002","Jonas Keller",""\n'
                 '"3","not a date","60000","5210843002","Jonas Keller",""\n'
                 '"4","2025-03-06","1e400","","Jonas Keller",""\n'
                 '"5","2025-03-04 10:15","754000",";;","Anna Berg",""\n')
    tables, quarantine = assert_same(load_both(tmp_path, path))
    (row,) = tables["activities"]
    assert (row["client_id"], row["duration_minutes"], row["started_at"], row["activity_type"]) == (
        "5210843001", "12.57", "2025-03-04T10:15", "call")
    assert row["extra"] == '{"_preset": "hubspot_calls"}'
    assert [q["reason"] for q in quarantine] == [
        "preset hubspot_calls: could not convert string to float: 'abc'",
        "preset hubspot_calls: 'not a date' is not a date",
        "required field(s) client_id empty (preset hubspot_calls)",
        "required field(s) client_id empty (preset hubspot_calls)"]


def test_opportunity_map_and_default(tmp_path, fast_only):
    path = write(tmp_path, "Opportunity.csv",
                 '"Id","AccountId","Name","StageName","Amount","CloseDate","IsWon","CurrencyIsoCode"\n'
                 '"O1","A1","x","Closed Won","10","2025-01-31","1",""\n'
                 '"O2","A1","y","Open","20","31.01.2025","maybe","USD"\n')
    tables, _ = assert_same(load_both(tmp_path, path))
    assert [(r["status"], r["currency"], r["issue_date"]) for r in tables["invoices"]] == [
        ("won", "EUR", "2025-01-31"), ("maybe", "USD", "2025-01-31")]


def test_user_mapping(tmp_path, fast_only):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "config.yaml").write_text(
        "crm:\n  mappings:\n    - name: our_erp_customers\n      vendor: ERP\n      entity: clients\n"
        "      signature: [Kundennummer, Firma]\n      columns:\n        client_id: Kundennummer\n"
        "        name: Firma\n        tax_id: USt-IdNr\n")
    mappings = load_settings(tmp_path).crm.mappings
    path = write(tmp_path, "kunden.csv", "Kundennummer;Firma;USt-IdNr;Ort\n4711;Alpen Logistik GmbH;DE136695976;Graz\n")
    tables, _ = assert_same(load_both(tmp_path, path, mappings))
    (row,) = tables["clients"]
    assert (row["client_id"], row["tax_id"]) == ("4711", "DE136695976")
    assert json.loads(row["extra"]) == {"Ort": "Graz", "_preset": "our_erp_customers"}


@pytest.mark.parametrize("body", [
    "client_id,name\nC1,A\nC2,B,extra\nC3\n",           # field counts differ: quarantined with source lines
    'client_id,name\nC1, "A"\n',                          # space before a quote: Python's csv keeps it
    'client_id,name\nC1,"A"x\n',                          # text after a closing quote
    'client_id,name\nC1,"unterminated\n',
    "client_id,name\r\nC1,A\nC2,B\r\n",                   # mixed line ends
    'client_id,"na\nme"\nC1,A\n',                         # line break in the header
    "client_id,name\nC1,A\x00\n",                         # NUL: Python's csv refuses
    "client_id,name\nC1,A\nC2,\xff\n",                    # not UTF-8 after the sample
])
def test_files_the_fast_path_leaves_to_the_reference(tmp_path, body):
    path = tmp_path / "c.csv"
    path.write_bytes(body.encode("utf-8", errors="surrogateescape") if "\xff" not in body
                     else body.replace("\xff", "").encode() + b"\xff\n")
    outcome = outcomes(tmp_path, path)
    if isinstance(outcome["reference"], str):
        assert outcome["bulk"] == outcome["reference"]
    else:
        assert outcome["bulk"][1:] == outcome["reference"][1:]


def test_field_count_rejections_match(tmp_path):
    path = write(tmp_path, "c.csv", "client_id,name\nC1,A\nC2,B,extra\nC3\n")
    _, quarantine = assert_same(load_both(tmp_path, path))
    assert [(q["record_number"], q["source_line"], q["reason"], q["raw_record"]) for q in quarantine] == [
        (2, 3, "row has 3 fields, the header has 2", "C2,B,extra"), (3, 4, "row has 1 fields, the header has 2", "C3")]


def test_missing_required_column_is_the_same_error(tmp_path):
    path = tmp_path / "deals.csv"
    path.write_text((PRESETS / "hubspot_deals.csv").read_text().replace('"Amount",', '"Betrag",'))
    stats = FileStats(path=path.name, sha256="h", reader="crm")
    with connect(tmp_path / "w.duckdb") as con, pytest.raises(ParseError) as err:
        ingest_bulk(con, lambda c: crm.load_bulk(c, path, file_hash="h", source_file=path.name, run_id="r",
                                                 scratch=tmp_path), stats=stats, kind="crm", size_bytes=1, run_id="r")
    assert str(err.value).startswith(f"{path}, field Amount: looks like a HubSpot export (preset hubspot_deals) but "
                                     "lacks the column 'Amount' needed for amount")


CELL = st.text(alphabet=st.sampled_from(list('aZ1Я ,;"\r\n\t\\\x01\xa0\u2003x.-')), max_size=8)


@FUZZ
@given(header=st.sampled_from(["manager_id,name,department", "manager_id;name;department;x;x",
                               "Id,Username,Name,Department,IsActive"]),
       rows=st.lists(st.lists(st.tuples(CELL, st.booleans()), min_size=1, max_size=6), max_size=6),
       ending=st.sampled_from(["\n", "\r\n"]), tail=st.sampled_from(["", "\n", '"', '"x', ' "a"']))
def test_random_csv_parity(tmp_path, header, rows, ending, tail):
    """Whatever the rows hold, both paths give the same tables, quarantine and errors."""
    delimiter = ";" if ";" in header else ","
    def cell(value, quote):
        return '"' + value.replace('"', '""') + '"' if quote else value
    body = header + ending + "".join(delimiter.join(cell(*v) for v in row) + ending for row in rows) + tail
    path = tmp_path / f"r{next(_counter)}.csv"
    path.write_text(body, encoding="utf-8", newline="")
    assert_same_outcome(outcomes(tmp_path, path))


@FUZZ
@given(data=corrupted_fixture(CSV_FIXTURES))
def test_corrupted_fixture_parity(tmp_path, data):
    """Flipped, cut and inserted bytes in the CSV fixtures: both paths agree (rows, quarantine or error)."""
    path = tmp_path / f"x{next(_counter)}.csv"
    path.write_bytes(data)
    assert_same_outcome(outcomes(tmp_path, path))


def test_ingest_file_uses_the_fast_path_with_the_configured_mappings(tmp_path, monkeypatch):
    from flows import steps
    from warehouse.load import file_sha256

    (tmp_path / "inbox" / "crm").mkdir(parents=True)
    (tmp_path / "inbox" / "config.yaml").write_text(
        "crm:\n  mappings:\n    - name: our_erp_customers\n      vendor: ERP\n      entity: clients\n"
        "      signature: [Kundennummer, Firma]\n      columns:\n        client_id: Kundennummer\n"
        "        name: Firma\n")
    settings = load_settings(tmp_path)
    path = tmp_path / "inbox" / "crm" / "kunden.csv"
    path.write_text("Kundennummer;Firma\n4711;Alpen Logistik GmbH\n4712;\n", encoding="utf-8")
    calls = []
    real = crm_bulk._fast
    monkeypatch.setattr(crm_bulk, "_fast", lambda *a, **k: calls.append(a[5].name) or real(*a, **k))
    item = steps.InboxFile(str(path), "crm/kunden.csv", "crm", file_sha256(path), path.stat().st_size)
    stats = steps.ingest_file(settings, item, "run1")
    assert calls == ["our_erp_customers"]
    assert (stats.reader, stats.rows_raw, stats.rows_quarantined, stats.encoding) == ("crm", 1, 1, "utf-8")
    with connect(settings.warehouse_path) as con:
        assert con.execute('SELECT client_id, name, extra FROM raw."crm_clients"').fetchall() == [
            ("4711", "Alpen Logistik GmbH", '{"_preset": "our_erp_customers"}')]
        assert con.execute("SELECT source_file, record_number, reason FROM ops.quarantine").fetchall() == [
            ("crm/kunden.csv", 2, "required field(s) name empty (preset our_erp_customers)")]


@FUZZ
@given(data=st.data(), preset=st.sampled_from([
    ("invoice_id,client_id,issue_date,amount,currency,note", ","),
    ('"Record ID";"Activity date";"Call duration";"Associated Company IDs";"Activity assigned to"', ";"),
    ("manager_id\tname\tdepartment\tname", "\t")]), ending=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())
def test_well_formed_csv_parity(tmp_path, data, preset, ending, bom):
    """Well-formed dumps (the fast path's home ground) with awkward values: same rows and quarantine."""
    header, delimiter = preset
    width = header.count(delimiter) + 1
    value = st.one_of(CELL, st.sampled_from(["2025-03-04 10:15", "754000", "1;2", "", "  ", "12,5", "x\u2028y"]))
    rows = data.draw(st.lists(st.lists(st.tuples(value, st.booleans()), min_size=width, max_size=width),
                              max_size=8))
    def cell(text, quote):
        must = any(c in text for c in (delimiter, '"', "\r", "\n")) or text != text.strip(" ")
        return '"' + text.replace('"', '""') + '"' if quote or must else text
    body = ("\ufeff" if bom else "") + header + ending + "".join(
        delimiter.join(cell(*v) for v in row) + ending for row in rows)
    path = tmp_path / f"w{next(_counter)}.csv"
    path.write_text(body, encoding="utf-8", newline="")
    assert_same_outcome(outcomes(tmp_path, path))


def test_a_space_run_before_a_quote_across_scan_chunks(tmp_path, monkeypatch):
    """The scan reads in chunks: a delimiter, then spaces over the chunk border, then a quote still counts."""
    monkeypatch.setattr(crm_bulk, "_CHUNK", 64)
    path = write(tmp_path, "c.csv", "client_id,name\nC1," + " " * 150 + '"A"\n')
    tables, quarantine = assert_same(load_both(tmp_path, path))
    assert tables["clients"][0]["name"] == '"A"'  # Python's csv keeps the quotes of a field not starting with one


@pytest.mark.parametrize(("chunks", "risky"), [
    (['C1,"A"', "   ,B\n"], True),  # the quote ends one chunk, the spaces after it open the next (no quote there)
    (["C1,   ", '"A",B\n'], True),  # a delimiter and spaces end one chunk, the quote opens the next
    (["C1,A   ", "  ,B\n", "C2,C\n"], False),  # spaces but no quote anywhere
    (['C1,"A"', ",B\n", "C2,   C\n"], False),  # a quote, but never a space beside it
])
def test_scan_finds_a_space_beside_a_quote_across_chunks(chunks, risky):
    """The scan skips its pair search in chunks without a quote; a quote in the tail kept from the chunk before
    still counts."""
    if risky:
        with pytest.raises(crm_bulk._Fallback):
            crm_bulk._scan(iter(chunks), ",")
    else:
        assert crm_bulk._scan(iter(chunks), ",") == sum(c.count('"') for c in chunks)
