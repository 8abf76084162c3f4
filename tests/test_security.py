"""Security, as tests: spreadsheet formula injection in CSV exports, SQL-looking values and config strings
are data (never code). XXE, billion laughs, zip bombs and path traversal are in test_sources_camt.py and
test_archive.py; contact PII is checked on the published marts in test_flow.py."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from clientbase.config import load_settings
from clientbase.errors import ConfigError, InboxError
from sources import bank_csv
from tests.test_staging import classify
from transforms.marts import key_clients
from warehouse.db import connect, query_polars
from warehouse.export import export_csv
from warehouse.load import FileStats, ingest_bulk

EVIL = ['=HYPERLINK("http://evil.example/x","Refund")', "+49 30 1234", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)",
        "\t=1+1", "Acme GmbH", "Müller & Söhne KG"]


def published(tmp_path: Path, names: list[str]) -> Path:
    marts = tmp_path / "marts"
    (marts / key_clients.NAME).mkdir(parents=True)
    n = len(names)
    frame = pl.DataFrame({c: [None] * n for c in key_clients.SCHEMA},
                         schema={c: t for c, (t, _) in key_clients.SCHEMA.items()}).with_columns(
        level=pl.lit("company"), unit=pl.lit("company"), client_id=pl.Series([f"C{i}" for i in range(n)]),
        name=pl.Series(names), net_revenue=pl.Series([-421.5 + i for i in range(n)]).cast(pl.Decimal(18, 2)))
    frame.write_parquet(marts / key_clients.NAME / "part-0.parquet")
    return marts


def test_csv_export_neutralises_formula_cells_and_keeps_numbers(tmp_path):
    out = export_csv(published(tmp_path, EVIL), "key_clients", tmp_path / "exports" / "key_clients.csv")
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel shows the umlauts
    names = pl.read_csv(out, encoding="utf8-lossy")["name"].to_list()
    assert names == ["'" + EVIL[0], "'+49 30 1234", "'-2+3+cmd|' /C calc'!A0", "'@SUM(A1)", "'\t=1+1",
                     "Acme GmbH", "Müller & Söhne KG"]
    amounts = pl.read_csv(out, encoding="utf8-lossy")["net_revenue"].to_list()
    assert amounts[0] == -421.5  # a negative number is a number, not a formula


def test_export_names_unknown_marts_and_missing_marts(tmp_path):
    marts = published(tmp_path, ["Acme"])
    with pytest.raises(InboxError, match="unknown mart 'clients'; the marts are: .*client_scorecard"):
        export_csv(marts, "clients", tmp_path / "x.csv")
    with pytest.raises(InboxError, match="no published marts yet"):
        export_csv(tmp_path / "nothing", "key_clients", tmp_path / "x.csv")


def test_sql_looking_values_in_a_statement_are_stored_verbatim(tmp_path):
    """Values reach DuckDB through read_csv and bound parameters, never through SQL text."""
    drop = "x'); DROP TABLE raw.bank_transaction; --"
    path = tmp_path / "evil.csv"
    quoted = EVIL[0].replace('"', '""')
    lines = ["account,date,debit,credit,currency,counterparty,description",  # a CSV file, not SQL
             f'DE02120300000000202051,2025-03-03,,10.00,EUR,"{drop}","\'; DELETE FROM ops.run_log; --"',  # noqa: S608 - CSV text
             f'DE02120300000000202051,2025-03-04,,12.00,EUR,"{quoted}",ok']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = FileStats(path=path.name, sha256="h", reader="bank_csv")
    with connect(tmp_path / "w.duckdb") as con:
        ingest_bulk(con, lambda c: bank_csv.load_bulk(c, path, file_hash="h", source_file=path.name, run_id="r",
                                                      scratch=tmp_path),
                    stats=stats, kind="bank", size_bytes=1, run_id="r")
        rows = query_polars(con, "SELECT counterparty_name, purpose FROM raw.bank_transaction ORDER BY record_number")
        tables = query_polars(con, "SELECT table_name FROM duckdb_tables() WHERE schema_name IN ('raw', 'ops')")
    assert rows.rows() == [(drop, "'; DELETE FROM ops.run_log; --"), (EVIL[0], "ok")]
    assert {"bank_transaction", "run_log", "quarantine"} <= set(tables["table_name"])


def test_config_strings_are_matched_literally(tmp_path):
    """A keyword is text to find, not a pattern or SQL: '%' or '.*' exclude nothing else."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "config.yaml").write_text(
        "classification:\n  excluded_purpose_keywords: [\"' OR '1'='1\", \".*\", \"%\"]\n", encoding="utf-8")
    cfg = load_settings(tmp_path).classification
    out = classify([
        {"amount": 100, "counterparty_name": "Acme GmbH", "purpose": "Invoice 17"},
        {"amount": 100, "counterparty_name": "Beta AG", "purpose": "x' OR '1'='1"},
    ], crm=False, excluded_keywords=cfg.excluded_purpose_keywords)
    assert out["category"].to_list() == ["client_payment", "excluded"]


def test_a_currency_that_is_not_iso_4217_is_refused(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "config.yaml").write_text("reporting_currency: \"EUR'; DROP TABLE x; --\"\n",
                                                    encoding="utf-8")
    with pytest.raises(ConfigError, match="reporting_currency"):
        load_settings(tmp_path)
