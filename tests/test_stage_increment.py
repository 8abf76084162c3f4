"""Staging an increment (only new bank files) gives exactly the staging a rebuild from the whole raw layer gives.

Each case ingests camt.053 files into one home in two batches (staging after each: the second is appended when
it can be) and all of them into another home at once (staging rebuilt), then compares every staging table row
for row, in order.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clientbase.config import load_settings
from clientbase.errors import GateFailed
from flows import staging_step, steps
from transforms import identity
from warehouse.db import connect, staging_files

OWN = ("DE89370400440532013000", "DE02120300000000202051", "LT121000011101001000")
PARTIES = (("Acme GmbH", "DE44500105175407324931"), ("Baltic Logistics UAB", "LT601010012345678901"),
           ("Nord Handel AG", None), ("Supplier Ltd", "GB29NWBK60161331926819"),
           ("Treasury", OWN[2]),  # its account is one of ours (a transfer, once we hold a statement for it)
           # Acme again, once with its VAT id, once by name alone: one counterparty (identity.counterparty_groups)
           ("Acme GmbH", "DE44500105175407324931", "DE136695976"), ("ACME GmbH", None))
CRM = ("client_id,name,tax_id,accounts,industry,size_band,region,acquisition_channel,created_date,manager_id,"
       "referred_by_client_id,is_potential,is_reference,is_innovator,is_demanding,satisfaction,share_of_wallet,"
       "is_exclusive,lead_stage\n"
       "C1,Acme GmbH,,,it,S,EU,web,2024-01-01,M01,,false,false,false,false,8,0.5,false,customer\n")


def camt(number: int, entries: list[tuple]) -> str:
    """A camt.053 document: one statement per own account, the entries in the given order."""
    statements = []
    for account in sorted({e[0] for e in entries}):
        rows = []
        for acct, day, amount, booked, ref, party in entries:
            if acct != account:
                continue
            name, iban, *tax = PARTIES[party]
            side = "Dbtr" if amount > 0 else "Cdtr"
            org = f"<Id><OrgId><Othr><Id>{tax[0]}</Id></Othr></OrgId></Id>" if tax else ""
            rows.append(
                f"<Ntry><Amt Ccy=\"EUR\">{abs(amount)}.00</Amt><CdtDbtInd>{'CRDT' if amount > 0 else 'DBIT'}"
                f"</CdtDbtInd><Sts>{'BOOK' if booked else 'PDNG'}</Sts><BookgDt><Dt>2026-03-{day:02d}</Dt></BookgDt>"
                + (f"<AcctSvcrRef>R{ref}</AcctSvcrRef>" if ref is not None else "")
                + f"<NtryDtls><TxDtls><RltdPties><{side}><Nm>{name}</Nm>{org}</{side}>"
                + (f"<{side}Acct><Id><IBAN>{iban}</IBAN></Id></{side}Acct>" if iban else "")
                + "</RltdPties></TxDtls></NtryDtls></Ntry>")
        statements.append(f"<Stmt><Id>S{number}-{account}</Id><Acct><Id><IBAN>{OWN[account]}</IBAN></Id></Acct>"
                          + "".join(rows) + "</Stmt>")
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
            "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02\"><BkToCstmrStmt>"
            f"<GrpHdr><MsgId>M{number}</MsgId><CreDtTm>2026-03-31T06:00:00</CreDtTm></GrpHdr>"
            + "".join(statements) + "</BkToCstmrStmt></Document>")


def ingest(home: Path, files: list[list[tuple]], first: int = 0, crm: bool = False) -> None:
    bank = home / "inbox" / "bank"
    bank.mkdir(parents=True, exist_ok=True)
    for number, entries in enumerate(files, start=first):
        (bank / f"f{number:02d}.xml").write_text(camt(number, entries), encoding="utf-8")
    if crm:
        (home / "inbox" / "crm").mkdir(parents=True, exist_ok=True)
        (home / "inbox" / "crm" / "clients.csv").write_text(CRM, encoding="utf-8")
    config = load_settings(home)
    found, _ = steps.discover(config)
    for item in found:
        steps.ingest_file(config, item, "run")


def staging_tables(home: Path) -> dict[str, pl.DataFrame]:
    return {t: pl.read_parquet(staging_files(home, t)) for t in steps.STAGING_TABLES}


def increment_and_rebuild(root: Path, files: list[list[tuple]], split: int, crm: bool = False):
    """(stats of the second stage of the two-batch home, its staging, the rebuilt home's staging)."""
    inc, full = root / "inc", root / "full"
    ingest(inc, files[:split], crm=crm)
    steps.stage(load_settings(inc))
    ingest(inc, files[split:], first=split)
    stats = steps.stage(load_settings(inc))
    ingest(full, files, crm=crm)
    steps.stage(load_settings(full))
    return stats, staging_tables(inc), staging_tables(full)


def assert_same(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    for table, frame in want.items():
        assert got[table].equals(frame), (table, got[table], frame)


BOOKED_ACME = (0, 2, 500, True, 1, 0)


def test_a_new_file_is_appended_as_a_part_and_equals_a_rebuild(tmp_path):
    files = [[BOOKED_ACME, (0, 3, -20, True, 2, 3), (1, 3, 70, True, None, 2)],
             [(0, 4, 300, True, 3, 1), BOOKED_ACME, (1, 3, 70, True, None, 2), (1, 5, 90, False, None, 2)]]
    stats, got, want = increment_and_rebuild(tmp_path, files, 1, crm=True)
    assert stats.appended and not stats.skipped
    # the second file repeats two rows of the first (by reference, and by fingerprint): staged once
    assert (stats.rows_raw_total, stats.rows_staged, stats.duplicates) == (7, 5, 2)
    assert [p.name for p in staging_files(tmp_path / "inc", "staging.bank_transaction")] == [
        "part-0000000002.parquet", "part-0000000003.parquet"]
    assert_same(got, want)
    # no new CRM file: the staged CRM clients are read, not staged from the raw layer again
    assert [p.name for p in staging_files(tmp_path / "inc", "staging.crm_client")] == ["part-0000000002.parquet"]
    staged = got["staging.bank_transaction"]
    assert staged.select("client_id", "category", "amount").rows()[-2:] == [
        ("bank:acct:LT601010012345678901", "client_payment", 300), ("bank:" + identity.name_digest("nord handel"), "client_payment", 90)]
    # the staged counterparties keep their match (Acme is the CRM's C1 by name); the new one is resolved and added
    assert got["staging.client_match"].select("counterparty_key", "client_id").rows() == [
        ("acct:DE44500105175407324931", "C1"), ("acct:GB29NWBK60161331926819", None), (identity.name_digest("nord handel"), None),
        ("acct:LT601010012345678901", None)]


@pytest.mark.parametrize(("files", "reason", "column", "staged"), [
    pytest.param([[(0, 2, 500, False, 1, 0)], [BOOKED_ACME]], "a new file supersedes staged rows", "status",
                 ["BOOK"], id="booked copy of a staged pending row"),
    # same account, day, amount: the same transaction
    pytest.param([[(0, 2, 500, True, None, 0)], [BOOKED_ACME]], "a new file supersedes staged rows", "key_method",
                 ["bank_reference"], id="reference for a staged unreferenced row"),
    # money to 'Treasury' (our LT account, unknown as ours until its statement arrives) was an outgoing payment
    pytest.param([[(0, 2, -100, True, 1, 4)], [(2, 2, 100, True, 2, 0)]],
                 "a new statement account (LT121000011101001000)", "category", ["own_transfer", "client_payment"],
                 id="new own account that was a counterparty"),
    pytest.param([[(0, 2, -40, True, 1, 3)], [(0, 9, 400, True, 2, 3)]], "paid for the first time", "category",
                 ["refund", "client_payment"], id="first payment after money sent to the counterparty"),
    # Acme's account, staged under its own key, is now seen with Acme's VAT id: both rows are the VAT id's
    pytest.param([[BOOKED_ACME], [(0, 4, 300, True, 2, 5)]], "joins staged counterparties", "client_id",
                 ["bank:tax:DE136695976"] * 2, id="an account seen with a tax id for the first time"),
    pytest.param([[(0, 2, 70, True, None, 6)], [BOOKED_ACME]], "joins staged counterparties", "client_id",
                 ["bank:acct:DE44500105175407324931"] * 2, id="a name-only payer's name now seen with an account"),
])
def test_new_rows_that_change_staged_ones_rebuild(tmp_path, caplog, files, reason, column, staged):
    with caplog.at_level(logging.INFO, logger="clientbase"):
        stats, got, want = increment_and_rebuild(tmp_path, files, 1)
    assert not stats.appended and reason in caplog.text
    assert got["staging.bank_transaction"][column].to_list() == staged
    assert_same(got, want)


def test_a_known_payer_without_its_tax_id_is_appended_to_it(tmp_path):
    """Rows without the tax id, by an account or a name staged with it, are the tax id's counterparty."""
    files = [[(0, 2, 500, True, 1, 5)], [(0, 3, 300, True, 2, 0), (0, 4, 70, True, 3, 6)]]
    stats, got, want = increment_and_rebuild(tmp_path, files, 1)
    assert stats.appended
    assert got["staging.bank_transaction"]["client_id"].to_list() == ["bank:tax:DE136695976"] * 3
    assert got["staging.counterparty"].rows() == [
        ("DE136695976", "DE44500105175407324931", "acme", "tax:DE136695976"),
        (None, "DE44500105175407324931", "acme", "tax:DE136695976"),
        (None, None, "acme", "tax:DE136695976")]
    assert_same(got, want)


def test_the_staged_gate_checks_an_appended_part_once_the_staging_passed_it(tmp_path, monkeypatch):
    from expectations.gate import run_gate

    home = tmp_path / "home"
    ingest(home, [[BOOKED_ACME, (0, 3, 70, True, 2, 2)]])
    settings = load_settings(home)
    steps.stage(settings)
    ingest(home, [[(0, 4, 300, True, 3, 1)]], first=1)
    # the staged rows never passed the staged gate: the appended part alone would not do
    assert steps.stage(settings).new_part is None
    checked = {}

    def spy(gate, run_id, datasets, suite, **kwargs):
        rows = datasets["staging.bank_transaction"]
        if isinstance(rows, str):  # the whole table, as a query
            with connect(settings.warehouse_path) as con:
                rows = pl.DataFrame(con.sql(rows).to_arrow_table())
        checked[run_id] = rows["record_number"].to_list()
        return run_gate(gate, run_id, datasets, suite, **kwargs)

    monkeypatch.setattr(steps, "run_gate", spy)
    assert steps.gate_staged(settings, "r1").passed
    ingest(home, [[(0, 5, 500, True, 4, 0), (0, 3, 70, True, 2, 2)]], first=2)  # a new row, and a staged one again
    stats = steps.stage(settings)
    assert stats.appended and stats.new_part == str(staging_files(home, "staging.bank_transaction")[-1])
    assert steps.gate_staged(settings, "r2", stats.new_part).passed
    assert len(checked["r1"]) == 3 and checked["r2"] == [1]  # the new part's one row
    # a bad row in the next part still stops the gate: a USD payment without an FX rate
    (home / "inbox" / "bank" / "f03.xml").write_text(
        camt(3, [(0, 6, 900, True, 5, 1)]).replace('Ccy="EUR"', 'Ccy="USD"'), encoding="utf-8")
    ingest(home, [])
    stats = steps.stage(settings)
    assert stats.new_part is not None
    with pytest.raises(GateFailed, match="no FX rate to EUR for USD on 2026-03-06"):
        steps.gate_staged(settings, "r3", stats.new_part)
    assert checked["r3"] == [1]
    # the staging state still says the rows have not all passed: the next part is checked with everything
    ingest(home, [[(0, 7, 100, True, 6, 1)]], first=4)
    assert steps.stage(settings).new_part is None


def test_the_staged_gate_skips_the_bank_rows_a_crm_refresh_kept_once_they_passed(tmp_path, monkeypatch):
    from expectations.gate import run_gate

    home = tmp_path / "home"
    ingest(home, [[BOOKED_ACME, (0, 3, 70, True, 2, 2)]], crm=True)
    settings = load_settings(home)
    steps.stage(settings)
    checked = {}

    def spy(gate, run_id, datasets, suite, **kwargs):
        rows = datasets["staging.bank_transaction"]
        checked[run_id] = "all" if isinstance(rows, str) else rows.height
        return run_gate(gate, run_id, datasets, suite, **kwargs)

    monkeypatch.setattr(steps, "run_gate", spy)

    def night(name: str, run_id: str) -> staging_step.StageStats:
        (home / "inbox" / "crm" / name).write_text(RE_EXPORT.replace("XX", run_id), encoding="utf-8")
        ingest(home, [])
        stats = steps.stage(settings)
        assert stats.crm_refreshed and steps.gate_staged(settings, run_id, stats.new_part, stats.bank_gated).passed
        return stats

    # the staged rows had not passed the gate when the CRM night came: all of them are checked
    assert not night("clients_2.csv", "r1").bank_gated
    assert night("clients_3.csv", "r2").bank_gated  # now they had, and no bank row changed
    assert checked == {"r1": "all", "r2": 0}


def test_a_refund_to_a_staged_payer_is_appended(tmp_path):
    files = [[(0, 2, 400, True, 1, 3)], [(0, 9, -40, True, 2, 3)]]
    stats, got, want = increment_and_rebuild(tmp_path, files, 1)
    assert stats.appended
    assert got["staging.bank_transaction"]["category"].to_list() == ["client_payment", "refund"]
    assert_same(got, want)


NIGHT_DUMP = CRM + "C2,Nord Handel AG,,,retail,M,EU,fair,2024-02-01,M01,,false,false,false,false,7,0.3,false,customer\n"
EXCLUDING = "classification:\n  excluded_counterparty_ids: [GB29NWBK60161331926819]\n"  # Supplier Ltd's account


# the same clients exported again, one moved to another region: no counterparty changes its client
RE_EXPORT = CRM.replace(",EU,", ",XX,")
INVOICES = "invoice_id,client_id,issue_date,amount,currency,status,margin\nINV-1,C1,2026-03-02,500.00,EUR,won,100\n"


def crm_night_and_rebuild(root: Path, files: list[list[tuple]], config: str | None = EXCLUDING, caplog=None,
                          night: dict[str, str] | None = None, night_files: list[list[tuple]] = ()):
    """(stats of the CRM night's stage, its staging, the staging of a rebuild with everything at once). With the
    default ``config``, payments to Supplier Ltd are excluded; Treasury's are own transfers when a file has a
    statement for its account. ``night``: the night's CRM files (default: ``NIGHT_DUMP`` as clients_2.csv, which
    adds Nord Handel AG as C2); ``night_files``: bank files of the same night. ``caplog`` captures the night's
    stage alone."""
    inc, full = root / "inc", root / "full"
    for home in (inc, full):
        (home / "inbox").mkdir(parents=True)
        if config is not None:
            (home / "inbox" / "config.yaml").write_text(config, encoding="utf-8")
    ingest(inc, files, crm=True)
    steps.stage(load_settings(inc))
    for home in (inc, full):
        (home / "inbox" / "crm").mkdir(parents=True, exist_ok=True)
        for name, text in (night or {"clients_2.csv": NIGHT_DUMP}).items():
            (home / "inbox" / "crm" / name).write_text(text, encoding="utf-8")
    ingest(inc, list(night_files), first=len(files))
    with caplog.at_level(logging.INFO, logger="clientbase") if caplog is not None else contextlib.nullcontext():
        stats = steps.stage(load_settings(inc))
    ingest(full, [*files, *night_files], crm=True)
    steps.stage(load_settings(full))
    return stats, staging_tables(inc), staging_tables(full)


def test_a_crm_export_that_changes_no_client_keeps_the_staged_bank_rows(tmp_path, caplog):
    """The usual night: the CRM exports its clients again (one moved region) and new invoices. Every counterparty
    keeps its client, so the staged bank rows and matches stay as they are (the same files), the invoices and
    clients are staged again, and the CRM tables without a new file are not touched; all equal a rebuild."""
    files = [[BOOKED_ACME, (1, 3, 70, True, None, 2), (0, 3, -20, True, 2, 3)]]
    night = {"clients_2.csv": RE_EXPORT, "invoices.csv": INVOICES}
    stats, got, want = crm_night_and_rebuild(tmp_path, files, caplog=caplog, night=night)
    assert stats.crm_refreshed and not stats.reclassified and not stats.appended
    assert "change no counterparty's client" in caplog.text and "restaging" not in caplog.text
    # the export moved a client to another region: nothing resolve reads changed, so it did not run
    assert "change no client's name, tax id or accounts: the staged matches stand" in caplog.text
    assert "staging.client, staging.crm_client, staging.invoice rebuilt" in caplog.text
    assert_same(got, want)
    assert got["staging.client"].filter(pl.col("client_id") == "C1")["region"].to_list() == ["XX"]
    assert got["staging.invoice"]["invoice_id"].to_list() == ["INV-1"]
    acme, supplier, nord = got["staging.bank_transaction"]["client_id"].to_list()  # in statement order
    assert (acme, supplier) == ("C1", None) and nord.startswith("bank:name:")  # Supplier Ltd's are excluded
    # kept tables keep the part of the first night (files 1 and 2); a rebuilt one is named by the last file (4)
    home = tmp_path / "inc"
    assert {t: [p.name for p in staging_files(home, t)] for t in steps.STAGING_TABLES} == {
        **{t: ["part-0000000002.parquet"] for t in steps.STAGING_TABLES},
        **{t: ["part-0000000004.parquet"] for t in ("staging.client", "staging.crm_client", "staging.invoice")}}
    assert got["staging.crm_client"].select("client_id", "region").rows() == [("C1", "XX")]


def test_a_crm_export_with_a_new_client_resolves_the_staged_counterparties_again(tmp_path, caplog):
    """A new CRM client (Nord Handel AG as C2) changes what resolve reads of the CRM, so the staged counterparties
    are resolved again; none of them is Nord Handel, so every one keeps its client and the bank rows stay."""
    files = [[BOOKED_ACME, (0, 3, -20, True, 2, 3)]]
    stats, got, want = crm_night_and_rebuild(tmp_path, files, caplog=caplog)
    assert stats.crm_refreshed and not stats.reclassified
    assert "change no counterparty's client" in caplog.text and "the staged matches stand" not in caplog.text
    assert_same(got, want)
    assert got["staging.client"].filter(pl.col("source") == "crm")["client_id"].sort().to_list() == ["C1", "C2"]


def test_a_new_invoice_export_replaces_the_staged_versions_and_reads_only_its_own_rows(tmp_path, monkeypatch):
    """Nightly invoice exports: the second night's changes INV-1, adds INV-2 and repeats it (its first record
    counts). Staging takes from raw only that file's rows and lets them replace the staged versions; the result
    equals a rebuild from both exports."""
    second = (INVOICES.splitlines()[0] + "\nINV-1,C1,2026-03-02,650.00,EUR,won,100\n"
              "INV-2,C1,2026-04-01,80.00,EUR,won,10\nINV-2,C1,2026-04-01,99.00,EUR,won,10\n")
    night = {"clients_2.csv": RE_EXPORT, "invoices.csv": INVOICES}
    crm_night_and_rebuild(tmp_path, [[BOOKED_ACME]], night=night)
    inc, rebuild = tmp_path / "inc", tmp_path / "rebuild"
    (inc / "inbox" / "crm" / "invoices_2.csv").write_text(second, encoding="utf-8")
    exported = []
    export = staging_step.export_parquet
    monkeypatch.setattr(staging_step, "export_parquet",
                        lambda con, table, path, files=None: exported.append((table, files)) or export(
                            con, table, path, files))
    queries = []
    query = staging_step.query_polars
    monkeypatch.setattr(staging_step, "query_polars",
                        lambda con, sql, params=None: queries.append((sql, params)) or query(con, sql, params))
    ingest(inc, [], first=1)
    stats = steps.stage(load_settings(inc))
    assert stats.crm_refreshed
    (new_file,), = [files for table, files in exported if table == "raw.crm_invoices"]
    # the CRM clients: only the new file's client rows are read (it has none), the staged ones stand
    assert [params for sql, params in queries if "crm_clients" in sql] == [[[new_file]]]
    assert [p.name for p in staging_files(inc, "staging.crm_client")] == ["part-0000000004.parquet"]
    with connect(load_settings(inc).warehouse_path) as con:
        assert con.execute("SELECT path FROM ops.ingested_file WHERE file_hash = ?",
                           [new_file]).fetchone()[0].endswith("invoices_2.csv")
    shutil.copytree(tmp_path / "full" / "inbox", rebuild / "inbox")
    (rebuild / "inbox" / "crm" / "invoices_2.csv").write_text(second, encoding="utf-8")
    ingest(rebuild, [[BOOKED_ACME]])
    steps.stage(load_settings(rebuild))
    got, want = staging_tables(inc), staging_tables(rebuild)
    assert_same(got, want)
    assert got["staging.invoice"].select("invoice_id", "amount").rows() == [
        ("INV-1", Decimal("650.00")), ("INV-2", Decimal("80.00"))]


def test_crm_tables_staged_in_slices_equal_them_staged_whole(tmp_path, monkeypatch):
    """A CRM entity table of more than ``STAGE_SLICE_ROWS`` raw rows is staged a slice at a time (polars then holds
    one slice, not what a streaming sink of the whole table decodes ahead): the same rows in the same order, of
    the same types, also where a slice ends between an id's versions."""
    second = (INVOICES.splitlines()[0] + "\nINV-1,C1,2026-03-02,650.00,EUR,won,100\n"
              "INV-2,C1,2026-04-01,80.00,EUR,won,10\nINV-3,C1,2026-04-02,1.234,EUR,won,\n"
              "INV-2,C1,2026-04-01,99.00,EUR,won,10\n")
    sliced = []
    write = staging_step.write_slices
    monkeypatch.setattr(staging_step, "write_slices", lambda path, slices: sliced.append(path.name) or write(
        path, slices))
    for home, rows in ((tmp_path / "whole", 1_000_000), (tmp_path / "sliced", 2)):
        monkeypatch.setattr(staging_step, "STAGE_SLICE_ROWS", rows)
        (home / "inbox" / "crm").mkdir(parents=True)
        (home / "inbox" / "crm" / "invoices.csv").write_text(INVOICES, encoding="utf-8")
        (home / "inbox" / "crm" / "invoices_2.csv").write_text(second, encoding="utf-8")
        ingest(home, [[BOOKED_ACME]], crm=True)
        steps.stage(load_settings(home))
    assert sliced == ["crm_invoices.parquet"]  # 5 raw invoices in 3 slices; the other tables are smaller
    got, want = staging_tables(tmp_path / "sliced"), staging_tables(tmp_path / "whole")
    assert_same(got, want)
    assert {t: f.schema for t, f in got.items()} == {t: f.schema for t, f in want.items()}
    assert got["staging.invoice"].select("invoice_id", "amount").rows() == [
        ("INV-1", Decimal("650.00")), ("INV-2", Decimal("80.00")), ("INV-3", Decimal("1.23"))]


def test_bank_rows_kept_in_slices_equal_them_kept_whole(tmp_path, monkeypatch):
    """Past ``STAGE_SLICE_ROWS`` raw rows the rows the dedupe keeps are labelled, classified and written to the
    staged file a slice at a time (a streaming sink held most of the raw file): a first night, the CRM night after
    it and a rebuild give the same staging as written whole, also where a slice ends between an entry and its
    repeat."""
    files = [[BOOKED_ACME, (1, 3, 70, True, None, 2), (0, 3, -20, True, 2, 3), (0, 4, 70, True, None, 2),
              (2, 5, 10, True, 3, 4), (0, 6, 70, True, 4, 6), (0, 6, 70, True, 4, 6), (0, 7, -30, True, 5, 4)]]
    whole = crm_night_and_rebuild(tmp_path / "whole", files)
    sliced = []
    write = staging_step.write_slices
    monkeypatch.setattr(staging_step, "write_slices", lambda path, slices: sliced.append(path.name) or write(
        path, slices))
    monkeypatch.setattr(staging_step, "STAGE_SLICE_ROWS", 2)
    stats, got, want = crm_night_and_rebuild(tmp_path / "sliced", files)
    assert stats.reclassified
    # the first night and the rebuild (the night reclassifies the staged rows)
    assert sliced == ["bank_transaction.parquet", "bank_transaction.parquet"]
    assert_same(got, whole[1])
    assert_same(want, whole[2])
    assert_same(got, want)
    # statement order; the repeated entry (same bank reference) once
    assert got["staging.bank_transaction"].select("counterparty_name", "category", "client_id").rows() == [
        ("Acme GmbH", "client_payment", "C1"), ("Supplier Ltd", "excluded", None),
        ("Nord Handel AG", "client_payment", "C2"), ("ACME GmbH", "client_payment", "C1"),
        ("Treasury", "own_transfer", None), ("Nord Handel AG", "client_payment", "C2"),
        ("Treasury", "own_transfer", None)]


def test_a_night_with_bank_and_crm_files_appends_when_no_client_changes(tmp_path, caplog):
    """A bank statement and a CRM export in one night: the export changes no counterparty's client, so the
    statement is appended as on a bank-only night (before, any CRM file with a bank file rebuilt staging)."""
    files = [[BOOKED_ACME, (1, 3, 70, True, None, 2)]]
    night_files = [[(0, 9, 300, True, 7, 0), (0, 9, -30, True, None, 3)]]
    stats, got, want = crm_night_and_rebuild(tmp_path, files, caplog=caplog, night_files=night_files,
                                             night={"clients_2.csv": RE_EXPORT, "invoices.csv": INVOICES})
    assert stats.appended and stats.crm_refreshed and not stats.reclassified
    assert "restaging" not in caplog.text
    assert_same(got, want)
    nord = "bank:" + got["staging.bank_transaction"]["counterparty_key"][1]
    assert got["staging.bank_transaction"].select("client_id", "amount").rows() == [
        ("C1", 500), (nord, 70), ("C1", 300), (None, -30)]


def test_a_night_with_bank_files_and_a_crm_that_changes_a_client_rebuilds(tmp_path, caplog):
    """Nord Handel AG, a bank-only payer, becomes CRM client C2 in the night's export: its staged payments must
    move to C2, so a night that also brings bank files rebuilds staging (equal to a rebuild, by definition)."""
    files = [[BOOKED_ACME, (1, 3, 70, True, None, 2)]]
    stats, got, want = crm_night_and_rebuild(tmp_path, files, caplog=caplog, night_files=[[(0, 9, 300, True, 7, 0)]])
    assert not stats.appended and not stats.crm_refreshed and not stats.reclassified
    assert ("restaging from the whole raw layer: new bank and CRM files, and the new CRM changes which client some "
            "counterparty is") in caplog.text
    assert_same(got, want)
    assert got["staging.bank_transaction"]["client_id"].to_list() == ["C1", "C2", "C1"]


def test_new_crm_files_classify_the_staged_bank_rows_again(tmp_path, caplog):
    """A new CRM dump (the usual night) re-resolves and re-classifies the staged bank rows instead of deduplicating
    the raw layer again, and stages the CRM entities its files hold from their rows alone: the same staging as a
    rebuild, with the new client matched."""
    files = [[BOOKED_ACME, (1, 3, 70, True, None, 2), (0, 3, -20, True, 2, 3), (0, 4, 70, True, None, 2)]]
    night = {"clients_2.csv": NIGHT_DUMP, "invoices.csv": INVOICES}
    stats, got, want = crm_night_and_rebuild(tmp_path, files, config=None, caplog=caplog, night=night)
    assert stats.reclassified and not stats.appended and not stats.skipped
    assert "only new CRM files" in caplog.text and "restaging" not in caplog.text
    assert (stats.rows_raw_total, stats.rows_staged, stats.clients) == (4, 4, want["staging.client"].height)
    assert got["staging.bank_transaction"].select("client_id", "match_method", "amount").rows() == [
        ("C1", "name_exact", 500), (None, None, -20), ("C2", "name_exact", 70), ("C2", "name_exact", 70)]
    assert_same(got, want)
    assert got["staging.invoice"]["invoice_id"].to_list() == ["INV-1"]
    # the CRM tables the night's files hold no row of are kept as staged the first night (part 2: its last file)
    assert {t: [p.name for p in staging_files(tmp_path / "inc", t)] for t in (
        "staging.invoice", "staging.activity", "staging.ticket", "staging.manager", "staging.crm_client")} == {
        "staging.invoice": ["part-0000000004.parquet"], "staging.crm_client": ["part-0000000004.parquet"],
        **{t: ["part-0000000002.parquet"] for t in ("staging.activity", "staging.ticket", "staging.manager")}}
    # and the next run with nothing new keeps it
    assert steps.stage(load_settings(tmp_path / "inc")).skipped


def test_a_crm_night_keeps_own_transfers_and_exclusions(tmp_path):
    files = [[(2, 1, 100, True, None, 0), (0, 2, -50, True, 1, 4), (0, 2, -40, True, 2, 3), (1, 3, 70, True, None, 2),
              (0, 3, 40, True, None, 3), (1, 4, 500, True, 3, 4)]]
    stats, got, want = crm_night_and_rebuild(tmp_path, files)
    assert stats.reclassified
    assert_same(got, want)
    # statement by statement (own accounts 0, 1, 2); Treasury's account is own (account 2 has a statement)
    assert got["staging.bank_transaction"].select("counterparty_name", "category", "client_id").rows() == [
        ("Treasury", "own_transfer", None), ("Supplier Ltd", "excluded", None), ("Supplier Ltd", "excluded", None),
        ("Nord Handel AG", "client_payment", "C2"), ("Treasury", "own_transfer", None),
        ("Acme GmbH", "client_payment", "C1")]


ENTRY = st.tuples(st.integers(0, 2), st.integers(1, 3), st.sampled_from([-40, 100, 500]), st.booleans(),
                  st.none() | st.integers(1, 4), st.integers(0, len(PARTIES) - 1))


@given(files=st.lists(st.lists(ENTRY, min_size=1, max_size=5), min_size=2, max_size=4),
       split=st.integers(1, 3), crm=st.booleans())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_increment_equals_a_rebuild(tmp_path_factory, files, split, crm):
    stats, got, want = increment_and_rebuild(tmp_path_factory.mktemp("case"), files, min(split, len(files) - 1),
                                             crm=crm)
    assert_same(got, want)


@given(files=st.lists(st.lists(ENTRY, min_size=1, max_size=6), min_size=1, max_size=3),
       night_files=st.lists(st.lists(ENTRY, min_size=1, max_size=3), max_size=1), dump=st.booleans())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_crm_night_equals_a_rebuild(tmp_path_factory, files, night_files, dump):
    """A night with a CRM export (Nord Handel AG added as C2, or the same clients again) and maybe a bank file."""
    night = {"clients_2.csv": NIGHT_DUMP if dump else RE_EXPORT}
    stats, got, want = crm_night_and_rebuild(tmp_path_factory.mktemp("night"), files, night=night,
                                             night_files=night_files)
    # only Nord Handel AG (party 2) changes its client, from itself to C2
    moved = dump and any(entry[5] == 2 for batch in files for entry in batch)
    assert stats.crm_refreshed == (not moved and (not night_files or stats.appended))
    assert stats.reclassified == (moved and not night_files)
    assert_same(got, want)


def test_parts_are_merged_past_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(staging_step, "MAX_STAGING_PARTS", 2)
    home = tmp_path / "inc"
    files = [[(0, day, 100, True, day, 0)] for day in range(1, 5)]
    parts = []
    for number, batch in enumerate(files):
        ingest(home, [batch], first=number)
        assert steps.stage(load_settings(home)).appended == (number > 0)
        parts.append([int(p.stem.removeprefix("part-")) for p in staging_files(home, "staging.bank_transaction")])
    assert parts == [[1], [1, 2], [3], [3, 4]]  # the third would have been the third part: all merged into one
    ingest(tmp_path / "full", files)
    steps.stage(load_settings(tmp_path / "full"))
    assert_same(staging_tables(home), staging_tables(tmp_path / "full"))
    assert staging_tables(home)["staging.bank_transaction"]["bank_reference"].to_list() == ["R1", "R2", "R3", "R4"]


def test_a_new_file_with_every_record_quarantined_appends_nothing(tmp_path):
    home = tmp_path / "inc"
    ingest(home, [[BOOKED_ACME]])
    steps.stage(load_settings(home))
    broken = camt(1, [(0, 3, 70, True, 2, 1)]).replace("<Amt Ccy=\"EUR\">70.00</Amt>", "<Amt Ccy=\"EUR\">7O,00</Amt>")
    (home / "inbox" / "bank" / "f01.xml").write_text(broken, encoding="utf-8")
    config = load_settings(home)
    found, _ = steps.discover(config)
    assert [steps.ingest_file(config, item, "run").rows_quarantined for item in found] == [1]
    stats = steps.stage(config)
    assert stats.appended and (stats.rows_raw_total, stats.rows_staged) == (1, 1)
    assert len(staging_files(home, "staging.bank_transaction")) == 2
    assert staging_tables(home)["staging.bank_transaction"]["bank_reference"].to_list() == ["R1"]
    with connect(config.warehouse_path) as con:  # the view reads the empty part too (the staged gate does)
        assert con.execute("SELECT list(bank_reference) FROM staging.bank_transaction").fetchone() == (["R1"],)


def test_staging_is_fingerprinted_by_its_own_code_not_the_marts_steps():
    """An upgrade that changes the marts' or the gates' steps keeps the staging on disk (a restage of 10M raw rows
    takes ~80 s); one that changes the stage step or a staging transform restages."""
    modules = {Path(mod.__file__).resolve() for mod in staging_step.STAGE_CODE_MODULES}
    root = Path(steps.__file__).resolve().parent.parent
    assert Path(steps.__file__).resolve() not in modules
    assert {root / "flows" / "staging_step.py", root / "transforms" / "staging.py",
            root / "transforms" / "identity.py"} <= modules
    assert steps.stage is staging_step.stage  # the flow's stage step is that module's

