import datetime as dt
from decimal import Decimal

import pytest

from clientbase.errors import ParseError
from sources import onec, registry
from sources.base import Balance, BankTxn, FileInfo, Rejected


@pytest.mark.parametrize(("fixture", "encoding"), [("1c_sberbank_cp1251.txt", "cp1251"),
                                                    ("1c_dos_cp866.txt", "cp866")])
def test_golden(fixtures, fixture, encoding):
    path = fixtures / "bank" / fixture
    assert registry.detect(path, "bank") is onec
    recs = list(onec.read(path))
    assert recs[0] == FileInfo(encoding=encoding)
    incoming, tax, fee = (r for r in recs if isinstance(r, BankTxn))
    assert (incoming.amount, incoming.booking_date, incoming.value_date) == (
        Decimal("125000.00"), dt.date(2025, 3, 15), dt.date(2025, 3, 14))
    assert (incoming.counterparty_name, incoming.counterparty_tax_id, incoming.counterparty_account) == (
        'ООО "Ромашка"', "7707083893", "40702810400000067890")
    assert incoming.purpose == "Оплата по счету № 15 от 01.03.2025, в т.ч. НДС 20% - 20833.33"
    assert (incoming.currency, incoming.own_account) == ("RUB", "40702810900000012345")
    # lower-case keys from another bank's export still parse; direction from the accounts
    assert (tax.amount, tax.counterparty_tax_id) == (Decimal("-30000.00"), "7842000011")
    assert tax.counterparty_name.startswith("УФК по г. Санкт-Петербургу")
    assert (fee.amount, fee.counterparty_name) == (Decimal("-500.50"), "ПАО Банк")
    rejected = next(r for r in recs if isinstance(r, Rejected))
    assert (rejected.record_number, rejected.reason) == (4, "amount '12.5O' is not a number")
    balance = next(r for r in recs if isinstance(r, Balance))
    assert (balance.opening, balance.closing, balance.entries_total) == (
        Decimal("100000.00"), Decimal("194499.50"), Decimal("94499.50"))
    assert balance.opening + balance.entries_total == balance.closing


def test_truncated_file_is_an_error(fixtures):
    with pytest.raises(ParseError, match="ends without КонецФайла: it is truncated"):
        list(onec.read(fixtures / "bank" / "1c_truncated.txt"))


def test_mangled_file_is_rejected(fixtures, tmp_path):
    text = (fixtures / "bank" / "1c_sberbank_cp1251.txt").read_bytes().decode("cp1251")
    path = tmp_path / "mangled.txt"
    path.write_text(text.replace("Ромашка", "\ufffd\ufffd\ufffd"), encoding="utf-8")
    with pytest.raises(ParseError, match="U\\+FFFD replacement characters"):
        list(onec.read(path))


def test_declared_encoding_is_verified(fixtures, tmp_path):
    text = (fixtures / "bank" / "1c_sberbank_cp1251.txt").read_bytes().decode("cp1251")
    path = tmp_path / "lies.txt"
    path.write_bytes(text.encode("cp866").replace("Кодировка=DOS".encode("cp866"),
                                                  "Кодировка=Windows".encode("cp866")))
    with pytest.raises(ParseError):
        list(onec.read(path))


def test_document_outside_own_accounts_is_quarantined(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1CClientBankExchange\nКодировка=UTF-8\nРасчСчет=40702810900000012345\n"
                    "СекцияДокумент=Платежное поручение\nДата=01.03.2025\nСумма=1.00\n"
                    "ПлательщикСчет=1\nПолучательСчет=2\nКонецДокумента\nКонецФайла\n", encoding="utf-8")
    (rejected,) = (r for r in onec.read(path) if isinstance(r, Rejected))
    assert "is one of the file's own accounts" in rejected.reason


@pytest.mark.parametrize(("account", "currency"), [("40702840500000001234", "USD"),
                                                    ("40702978000000001234", "EUR"),
                                                    ("40702643000000001234", "RUB")])
def test_currency_from_account_number(account, currency):
    assert onec.currency_of(account, "f") == currency


def test_foreign_account_format_is_a_clear_error():
    with pytest.raises(ParseError, match="not a 20-digit account number"):
        onec.currency_of("KZ86125KZT5004100100", "f")
