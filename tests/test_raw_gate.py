"""The raw gate on real ingested files (steps called directly, no Prefect)."""

from decimal import Decimal

import pytest

from clientbase.config import load_settings
from clientbase.errors import GateFailed
from flows import steps
from warehouse.db import read_frames


def ingest(tmp_path, name, data: bytes):
    bank = tmp_path / "inbox" / "bank"
    bank.mkdir(parents=True, exist_ok=True)
    (bank / name).write_bytes(data)
    settings = load_settings(tmp_path)
    files, _ = steps.discover(settings)
    return settings, [steps.ingest_file(settings, f, "run-1") for f in files]


def test_balanced_statements_pass_and_record_results(tmp_path, fixtures):
    settings, stats = ingest(tmp_path, "s.xml", (fixtures / "bank" / "camt053_v02_awkward.xml").read_bytes())
    assert [(s.rows_raw, s.rows_quarantined, s.records_in) for s in stats] == [(6, 1, 7)]
    outcome = steps.gate_raw(settings, "run-1")
    assert outcome.passed
    results = read_frames(settings.warehouse_path, {"r": "SELECT dataset, success FROM ops.dq_results"})["r"]
    assert results.height > 5 and results["success"].all()
    quarantined = read_frames(settings.warehouse_path, {"q": "SELECT source_file, record_number, reason "
                                                             "FROM ops.quarantine"})["q"]
    assert quarantined.rows() == [("bank/s.xml", 8, "amount '12,00' is not a number")]


def test_unbalanced_statement_fails_naming_the_file(tmp_path, fixtures):
    data = (fixtures / "bank" / "camt053_v08_pty.xml").read_bytes().replace(b">70.00<", b">70.01<")
    settings, stats = ingest(tmp_path, "march.xml", data)
    with pytest.raises(GateFailed) as err:
        steps.gate_raw(settings, "run-1")
    message = str(err.value)
    assert message.startswith("gate 'raw' failed")
    assert (f"{tmp_path / 'inbox' / 'bank' / 'march.xml'}: statement S-2025-03 of account LV80BANK0000435195001 "
            "does not reconcile: opening -50.00000 + entries 120.00000 != closing 70.01000 (difference -0.01000)"
            ) in message


def test_won_invoice_without_fx_rate_stops_the_staged_gate(tmp_path, fixtures):
    crm = tmp_path / "inbox" / "crm"
    crm.mkdir(parents=True)
    (crm / "invoices.csv").write_text(
        "invoice_id,client_id,issue_date,amount,currency,status,margin\n"
        "INV-9,C1,2025-03-02,100.00,USD,won,\nINV-10,C1,2025-03-02,5.00,EUR,won,\n"
        "INV-11,C1,2025-03-02,12.5O,EUR,won,\n"  # a letter O: not a number, whatever the rates
        "INV-12,C1,2025-03-02,9999999999999999.00,EUR,won,-9999999999999999.00\n")  # its cost is beyond MONEY
    settings, stats = ingest(tmp_path, "s.xml", (fixtures / "bank" / "camt053_v08_pty.xml").read_bytes())
    steps.stage(settings)  # the cost of INV-12 (amount - margin) stays unknown instead of failing the cast
    invoices = read_frames(settings.warehouse_path, {"i": "SELECT invoice_id, amount, cost FROM staging.invoice "
                                                          "ORDER BY invoice_id"})["i"]
    assert invoices.rows()[1:] == [("INV-11", None, None), ("INV-12", Decimal("9999999999999999.00"), None),
                                   ("INV-9", None, None)]
    with pytest.raises(GateFailed) as err:
        steps.gate_staged(settings, "run-1")
    assert ("1 won CRM invoice(s) in USD have no FX rate to EUR on their issue date (e.g. invoice INV-9 of "
            "2025-03-02)") in str(err.value)
    assert ("1 won CRM invoice(s) have an amount that is empty, not a number or more than 16 digits before the "
            "point (e.g. invoice INV-11); correct them in the CRM export") in str(err.value)


def gate_with_first_row(tmp_path, fixtures, column: str, value: str):
    """A camt statement ingested, its first raw row's ``column`` set to ``value``, the raw gate run: the settings
    and the GateFailed it must raise."""
    from warehouse.db import connect, quote_ident

    settings, _ = ingest(tmp_path, "s.xml", (fixtures / "bank" / "camt053_v02_awkward.xml").read_bytes())
    with connect(settings.warehouse_path) as con:
        con.execute(f"UPDATE raw.bank_transaction SET {quote_ident(column)} = ? WHERE record_number = "  # noqa: S608
                    "(SELECT min(record_number) FROM raw.bank_transaction)", [value])
    with pytest.raises(GateFailed) as err:
        steps.gate_raw(settings, "run-1")
    return settings, err.value


def test_bad_raw_row_fails_the_gate_and_lands_in_dq_results(tmp_path, fixtures):
    """The raw gate validates the warehouse table in DuckDB: a bad currency in raw is a failed dq_results row."""
    settings, err = gate_with_first_row(tmp_path, fixtures, "currency", "eu")
    assert ('raw.bank_transaction.currency expect_column_values_to_match_regex '
            '(observed {"unexpected_count": 1, "examples": ["eu"]})') in str(err)
    failed = read_frames(settings.warehouse_path, {"r": "SELECT run_id, gate, dataset, check_name, column_name, "
                                                        "observed FROM ops.dq_results WHERE NOT success"})["r"]
    assert failed.rows() == [("run-1", "raw", "raw.bank_transaction", "expect_column_values_to_match_regex",
                              "currency", '{"unexpected_count": 1, "examples": ["eu"]}')]
    assert (settings.data_docs_dir / "raw" / "index.html").exists()


def test_an_own_account_without_letters_or_digits_fails_the_gate(tmp_path, fixtures):
    """Such an account normalises to nothing: the dedupe would take its rows for one transaction."""
    _, err = gate_with_first_row(tmp_path, fixtures, "own_account", " - / - ")
    assert ('raw.bank_transaction.own_account expect_column_values_to_match_regex '
            '(observed {"unexpected_count": 1, "examples": [" - / - "]})') in str(err)


def test_a_failed_file_fails_every_run_until_it_is_retracted(tmp_path, fixtures):
    """A run that brings no new file still gates the file that failed before (it used to gate only new files, so
    the second night published the unbalanced statement); retract takes it out once the inbox holds the
    corrected file, which the next run loads and gates."""
    from clientbase.errors import InboxError
    from warehouse.db import connect

    good = (fixtures / "bank" / "camt053_v08_pty.xml").read_bytes()
    settings, _ = ingest(tmp_path, "march.xml", good.replace(b">70.00<", b">70.01<"))
    march = tmp_path / "inbox" / "bank" / "march.xml"
    for _ in range(2):  # the night it arrived, and the next one (nothing new)
        with pytest.raises(GateFailed) as err:
            steps.gate_raw(settings, "run-1")
        assert f"{march}: statement S-2025-03 of account LV80BANK0000435195001 does not reconcile" in str(err.value)
        assert (f"correct or remove the file in the inbox, then `clientbase retract --home {settings.home} <file>` "
                "takes its rows out of the warehouse") in str(err.value)
    with pytest.raises(InboxError, match="still holds bank/march.xml: correct, replace or move it first"):
        steps.retract_files(settings, ["bank/march.xml"])
    with pytest.raises(InboxError, match="bank/april.xml: no ingested file has this path or hash"):
        steps.retract_files(settings, ["bank/april.xml"])

    march.write_bytes(good)  # corrected
    with connect(settings.warehouse_path) as con:
        (old_hash,), = con.execute("SELECT file_hash FROM ops.ingested_file").fetchall()
    assert steps.retract_files(settings, [str(march)]) == [("bank/march.xml", old_hash)]  # absolute path too
    with connect(settings.warehouse_path) as con:
        left = [con.execute(f"SELECT count(*) FROM {t} WHERE file_hash = ?", [old_hash]).fetchall()[0][0]  # noqa: S608
                for t in ("raw.bank_transaction", "raw.statement_balance", "ops.quarantine", "ops.ingested_file")]
    assert left == [0, 0, 0, 0]
    files, _ = steps.discover(settings)
    assert [f.relative for f in files] == ["bank/march.xml"]
    steps.ingest_file(settings, files[0], "run-2")
    assert steps.gate_raw(settings, "run-2").passed
    assert steps.gate_raw(settings, "run-3") is None  # nothing waits for the gate any more


def test_a_row_booked_before_the_earliest_date_fails_the_gate_naming_it(tmp_path):
    """A mistyped year (1025) would open a cohort a thousand years back; older history is a setting away."""
    settings, _ = ingest(tmp_path, "old.csv", (
        "account,booking_date,amount,currency,counterparty_name\n"
        "EE382200221020145685,2025-03-02,100.00,EUR,Tallinn Trade OÜ\n"
        "EE382200221020145685,1025-03-03,50.00,EUR,Tallinn Trade OÜ\n").encode())
    with pytest.raises(GateFailed) as err:
        steps.gate_raw(settings, "run-1")
    assert (f"{tmp_path / 'inbox' / 'bank' / 'old.csv'}, record 2, booking date: 1025-03-03 is before "
            "earliest_booking_date (1990-01-01); a mistyped year?") in str(err.value)
    (tmp_path / "inbox" / "config.yaml").write_text("earliest_booking_date: 1000-01-01\n")
    from clientbase.config import load_settings

    assert steps.gate_raw(load_settings(tmp_path), "run-2").passed
