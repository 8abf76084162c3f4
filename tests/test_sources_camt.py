import datetime as dt
from decimal import Decimal

import pytest

from clientbase.errors import ParseError
from sources import camt, registry
from sources.base import Balance, BankTxn, Rejected


def records(path):
    return list(camt.read(path))


def test_detected_by_content_not_extension(fixtures, tmp_path):
    renamed = tmp_path / "statement.txt"
    renamed.write_bytes((fixtures / "bank" / "camt053_v02_awkward.xml").read_bytes())
    assert registry.detect(renamed, "bank") is camt


def test_v02_golden(fixtures):
    recs = records(fixtures / "bank" / "camt053_v02_awkward.xml")
    txns = [r for r in recs if isinstance(r, BankTxn)]
    # split entry: two records with their own amounts, parties and references
    first, second = txns[0], txns[1]
    assert (first.amount, first.counterparty_name, first.counterparty_tax_id) == (
        Decimal("1000.00"), "Müller & Söhne GmbH", "DE136695976")
    assert first.counterparty_account == "DE02 1203 0000 0000 2020 51"
    assert first.counterparty_bic == "BYLADEM1001"
    assert first.purpose == "Rechnung INV-2025-0042 Kunde 4711"
    assert first.end_to_end_id == "INV-2025-0042"
    assert first.bank_reference == "2025022800001-1"
    assert (second.amount, second.counterparty_account, second.end_to_end_id, second.purpose) == (
        Decimal("500.00"), "LT12100001012345678", None, "RF18539007547034")
    # entry without TxDtls: purpose falls back to AddtlNtryInf; debit sign
    fee = txns[2]
    assert (fee.amount, fee.purpose, fee.counterparty_name) == (Decimal("-4.50"), "Entgelt Kontoführung 02/2025", None)
    # reversal with a DtTm booking date, debit towards the creditor
    reversal = txns[3]
    assert (reversal.amount, reversal.is_reversal, reversal.booking_date, reversal.counterparty_name) == (
        Decimal("-350.00"), True, dt.date(2025, 2, 28), "Baltic Logistics UAB")
    assert txns[4].status == "PDNG"
    # second statement in the same file: other account id, 5-decimal amount
    usd = txns[5]
    assert (usd.own_account, usd.currency, usd.amount) == ("40702840500000001234", "USD", Decimal("10.12345"))
    assert {t.own_account for t in txns[:5]} == {"DE89370400440532013000"}


def test_v02_balances_reconcile(fixtures):
    balance = next(r for r in records(fixtures / "bank" / "camt053_v02_awkward.xml") if isinstance(r, Balance))
    assert (balance.opening, balance.closing, balance.entries_total) == (
        Decimal("1000.00"), Decimal("2145.50"), Decimal("1145.50"))
    assert balance.opening + balance.entries_total == balance.closing  # pending entry excluded


def test_broken_entry_is_quarantined_not_dropped(fixtures):
    recs = records(fixtures / "bank" / "camt053_v02_awkward.xml")
    rejected = [r for r in recs if isinstance(r, Rejected)]
    assert len(rejected) == 1
    assert rejected[0].reason == "amount '12,00' is not a number"
    assert rejected[0].source_line == 66
    numbers = [r.record_number for r in recs]
    assert numbers == list(range(1, len(recs) + 1))


def test_v08_party_under_pty(fixtures):
    recs = records(fixtures / "bank" / "camt053_v08_pty.xml")
    txn = next(r for r in recs if isinstance(r, BankTxn))
    assert (txn.counterparty_name, txn.counterparty_tax_id, txn.counterparty_bic, txn.value_date) == (
        'SIA "Rīgas Koks"', "LV40003245752", "HABALV22", dt.date(2025, 3, 15))
    balance = next(r for r in recs if isinstance(r, Balance))
    assert (balance.opening, balance.closing) == (Decimal("-50.00"), Decimal("70.00"))


def test_dtd_is_refused(tmp_path):
    evil = tmp_path / "xxe.xml"
    evil.write_text('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                    '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><a>&x;</a></Document>')
    with pytest.raises(ParseError, match="DOCTYPE/DTD is refused") as err:
        records(evil)
    assert str(evil) in str(err.value)


def test_truncated_file_is_a_clear_error(fixtures, tmp_path):
    data = (fixtures / "bank" / "camt053_v08_pty.xml").read_bytes()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match="not well-formed XML .* damaged or truncated"):
        records(cut)


def test_bad_dates_are_quarantined(fixtures, tmp_path):
    data = (fixtures / "bank" / "camt053_v08_pty.xml").read_text(encoding="utf-8")
    path = tmp_path / "bad-date.xml"
    path.write_text(data.replace("<BookgDt><Dt>2025-03-14", "<BookgDt><Dt>2025-0[-14"), encoding="utf-8")
    recs = records(path)
    (rejected,) = (r for r in recs if isinstance(r, Rejected))
    assert rejected.reason == "date '2025-0[-14' is not an ISO date (YYYY-MM-DD)"


def test_billion_laughs_is_refused_without_expanding(tmp_path):
    lol = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + "".join(f'<!ENTITY lol{i} "{"&lol{};".format(i - 1 if i > 1 else "") * 10}">' for i in range(1, 10))
           + ']><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt><Id>&lol9;'
           + "</Id></Stmt></BkToCstmrStmt></Document>")
    path = tmp_path / "lol.xml"
    path.write_text(lol)
    with pytest.raises(ParseError, match="DOCTYPE/DTD is refused"):
        records(path)


def test_entry_without_details_and_a_bad_indicator_is_quarantined(tmp_path):
    """The sign of an entry without TxDtls comes from its own CdtDbtInd; one that is neither CRDT nor DBIT is that
    entry's problem (quarantined, the file goes on), not the whole file's."""
    entries = "".join(
        f'<Ntry><Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>{ind}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>'
        f"<BookgDt><Dt>2025-03-0{n}</Dt></BookgDt><AddtlNtryInf>fee {n}</AddtlNtryInf></Ntry>\n"
        for n, (amount, ind) in enumerate((("1.00", "DBIT"), ("2.00", "CRDIT"), ("3.00", "CRDT")), start=1))
    path = tmp_path / "ind.xml"
    path.write_text('<?xml version="1.0"?>\n<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">'
                    "<BkToCstmrStmt><Stmt><Id>S</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>\n"
                    f"{entries}</Stmt></BkToCstmrStmt></Document>\n", encoding="utf-8")
    recs = records(path)
    assert [(type(r).__name__, r.record_number, r.source_line) for r in recs] == [
        ("BankTxn", 1, 3), ("Rejected", 2, 4), ("BankTxn", 3, 5)]
    assert recs[1].reason == "CdtDbtInd 'CRDIT' at line 4 is neither CRDT nor DBIT"
    assert [(r.amount, r.purpose) for r in (recs[0], recs[2])] == [(Decimal("-1.00"), "fee 1"), (Decimal("3.00"), "fee 3")]
