import datetime as dt
from decimal import Decimal

import pytest

from clientbase.errors import ParseError
from sources import mt940, registry
from sources.base import Balance, BankTxn, FileInfo, Rejected


def parse(path):
    return list(mt940.read(path))


def test_german_structured_86_in_cp1252(fixtures):
    path = fixtures / "bank" / "mt940_de_sparkasse.sta"
    assert registry.detect(path, "bank") is mt940
    recs = parse(path)
    assert recs[0] == FileInfo(encoding="cp1252")
    credit, debit, interest = (r for r in recs if isinstance(r, BankTxn))
    assert (credit.own_account, credit.booking_date, credit.amount, credit.currency) == (
        "DE73100200300001234567", dt.date(2025, 3, 3), Decimal("1500.00"), "EUR")  # BLZ/Konto as IBAN
    assert (credit.counterparty_name, credit.counterparty_account, credit.counterparty_bic) == (
        "Müller und Söhne GmbH", "DE02120300000000202051", "BYLADEM1001")
    # ?21/?22 continue the purpose across the 65-character line wrap without a space
    assert credit.purpose == "Rechnung 2025-0042 Kunde 4711"
    assert (credit.end_to_end_id, credit.bank_reference) == ("INV-2025-0042", "025030312345")
    assert (debit.amount, debit.counterparty_name, debit.purpose) == (Decimal("-82.60"), "Stadtwerke Köln",
                                                                       "Strom 01/2025")
    assert (interest.amount, interest.purpose) == (Decimal("0.50"), "ZINSEN")  # posting text as purpose
    balance = next(r for r in recs if isinstance(r, Balance))
    assert (balance.opening, balance.closing, balance.entries_total) == (
        Decimal("1000.00"), Decimal("2417.90"), Decimal("1417.90"))


def test_dutch_name_remi_style_in_swift_envelope(fixtures):
    recs = parse(fixtures / "bank" / "mt940_nl_rabobank.swi")
    credit, tax = (r for r in recs if isinstance(r, BankTxn))
    assert (credit.own_account, credit.currency) == ("NL91RABO0315273637", "EUR")
    assert (credit.counterparty_name, credit.counterparty_account, credit.counterparty_bic) == (
        "Bakkerij de Gouden Korenaar B.V.", "NL20INGB0001234567", "INGBNL2A")
    assert (credit.purpose, credit.end_to_end_id) == ("Factuur 2025-118 klantnr 88", "E2E-NL-0001")
    assert (tax.amount, tax.counterparty_name, tax.purpose) == (Decimal("-1000.00"), "Belastingdienst", "BTW Q4 2024")
    balance = next(r for r in recs if isinstance(r, Balance))
    assert balance.opening + balance.entries_total == balance.closing == Decimal("11250.00")


def test_mt942_cyrillic_cp1251_comes_out_right(fixtures):
    recs = parse(fixtures / "bank" / "mt942_ru_cp1251.txt")
    assert recs[0] == FileInfo(encoding="cp1251")
    (txn,) = (r for r in recs if isinstance(r, BankTxn))
    assert txn.purpose.startswith('ООО "Ромашка" ИНН 7707083893 Оплата по счету')
    assert (txn.counterparty_tax_id, txn.currency, txn.amount, txn.bank_reference) == (
        "7707083893", "RUB", Decimal("125000.00"), "PP-77")
    assert not any(isinstance(r, Balance) for r in recs)  # an interim report has no balances


def test_cp866_is_told_apart_from_cp1251(fixtures, tmp_path):
    source = (fixtures / "bank" / "mt942_ru_cp1251.txt").read_bytes().decode("cp1251")
    path = tmp_path / "dos.txt"
    path.write_bytes(source.encode("cp866"))
    recs = parse(path)
    assert recs[0] == FileInfo(encoding="cp866")
    assert next(r for r in recs if isinstance(r, BankTxn)).purpose.startswith('ООО "Ромашка"')


def test_malformed_message_is_quarantined(tmp_path):
    path = tmp_path / "bad.sta"
    path.write_text(":20:A\n:25:DE89370400440532013000\n:28C:1\n:60F:C250301EUR10,00\n"
                    ":61:2503XX0303CR1,00NTRFNONREF\n:62F:C250305EUR11,00\n-\n"
                    ":20:B\n:25:DE89370400440532013000\n:28C:2\n:60F:C250305EUR11,00\n"
                    ":61:2503060306CR2,00NTRFNONREF\n:86:ok\n:62F:C250306EUR13,00\n-\n")
    recs = parse(path)
    kinds = [type(r).__name__ for r in recs]
    assert kinds.count("BankTxn") == 1
    assert kinds.count("Rejected") == 1
    rejected = next(r for r in recs if isinstance(r, Rejected))
    assert rejected.source_line == 1 and rejected.reason.startswith("malformed MT940 message")


def test_overlong_line_is_refused(tmp_path):
    path = tmp_path / "long.sta"
    path.write_text(":20:A\n:25:X\n:61:" + "9" * 20_000 + "\n")
    with pytest.raises(ParseError, match="longer than 10000 characters"):
        parse(path)


def test_german_iban_from_blz_and_account():
    # the textbook example IBAN (Commerzbank Köln)
    assert mt940.german_iban("37040044", "532013000") == "DE89370400440532013000"


def test_amounts_the_warehouse_cannot_hold_exactly_are_quarantined(tmp_path):
    """DECIMAL(23, 5) takes five decimals; a sixth is never rounded away: the entry (or, for a balance, the
    message, whose balance row shares the entries' record numbers) goes to quarantine."""
    path = tmp_path / "six.sta"
    path.write_text(":20:A\n:25:DE89370400440532013000\n:60F:C250301EUR10,00\n"
                    ":61:2503020302CR1,123456NTRFNONREF\n:61:2503020302CR2,00NTRFNONREF\n:62F:C250305EUR13,00\n-\n"
                    ":20:B\n:25:DE89370400440532013000\n:60F:C250305EUR13,000001\n"
                    ":61:2503060306CR2,00NTRFNONREF\n:62F:C250306EUR15,00\n-\n")
    recs = [r for r in parse(path) if not isinstance(r, FileInfo)]
    assert [(type(r).__name__, r.record_number) for r in recs] == [
        ("Rejected", 1), ("BankTxn", 2), ("Balance", 2), ("Rejected", 3)]
    assert recs[0].reason == "amount '1.123456' has more than 5 decimals"
    assert recs[3].reason == "malformed MT940 message: amount '13.000001' has more than 5 decimals"
    assert recs[3].source_line == 8


def test_reversals_carry_the_sign_of_the_money_movement(tmp_path):
    """RC reverses a credit (the money goes back out: negative), RD reverses a debit (it comes back: positive);
    both are marked as reversals."""
    path = tmp_path / "rev.sta"
    path.write_text(":20:A\n:25:DE89370400440532013000\n:60F:C250301EUR10,00\n"
                    ":61:2503020302RC4,00NTRFNONREF\n:86:Rueckbuchung\n:61:2503020302RD1,50NTRFNONREF\n"
                    ":61:2503020302C2,00NTRFNONREF\n:62F:C250302EUR9,50\n-\n")
    txns = [r for r in parse(path) if isinstance(r, BankTxn)]
    assert [(t.amount, t.is_reversal) for t in txns] == [
        (Decimal("-4.00"), True), (Decimal("1.50"), True), (Decimal("2.00"), False)]
    (balance,) = (r for r in parse(path) if isinstance(r, Balance))
    assert balance.opening + balance.entries_total == balance.closing


def test_only_the_banks_reference_identifies_an_entry(tmp_path):
    """The account owner's reference repeats (a standing order's 'MIETE' every month): two rent payments must
    not become one transaction; the bank's reference after '//' is the key."""
    from tests import parity

    path = tmp_path / "rent.sta"
    path.write_text(":20:A\n:25:DE89370400440532013000\n:60F:C250101EUR0,00\n"
                    ":61:2501030103CR500,00NTRFMIETE\n:61:2502030203CR500,00NTRFMIETE\n"
                    ":61:2503030303CR500,00NTRFMIETE//B-0303\n:62F:C250303EUR1500,00\n-\n")
    txns = [r for r in parse(path) if isinstance(r, BankTxn)]
    assert [t.bank_reference for t in txns] == [None, None, "B-0303"]
    for mode in ("bulk", "reference"):  # the fast path reads it the same way
        rows = parity.load(mt940, tmp_path, path, mode)["rows"]
        assert [r["bank_reference"] for r in rows] == [None, None, "B-0303"], mode
