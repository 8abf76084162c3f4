import datetime as dt
from decimal import Decimal

import pytest

from clientbase.errors import UnknownFormatError
from sources import bank_csv, registry
from sources.base import BankTxn, Rejected, parse_decimal


def test_sparkasse_cp1252_golden(fixtures):
    path = fixtures / "bank" / "sparkasse_cp1252.csv"
    assert registry.detect(path, "bank") is bank_csv
    recs = list(bank_csv.read(path))
    assert [type(r).__name__ for r in recs] == ["BankTxn", "BankTxn", "Rejected", "BankTxn"]
    first = recs[0]
    assert isinstance(first, BankTxn)
    assert (first.own_account, first.booking_date, first.amount, first.currency) == (
        "DE02120300000000202051", dt.date(2025, 2, 3), Decimal("5000.01"), "EUR")
    assert (first.counterparty_name, first.purpose) == ("Müller & Söhne GmbH", "RE 2025-001 Büromöbel")
    assert first.counterparty_account == "DE89370400440532013000"  # spaces removed
    assert recs[1].amount == Decimal("-82.60")
    bad = recs[2]
    assert isinstance(bad, Rejected)
    assert (bad.record_number, bad.source_line, bad.reason) == (3, 4, "amount '1.234,5x' is not a number")
    assert "Weiß Logistik KG" in bad.raw
    pending = recs[3]
    assert (pending.amount, pending.status, pending.source_line) == (Decimal("82604.01"), "PDNG", 6)


def test_generic_signed(fixtures):
    recs = list(bank_csv.read(fixtures / "bank" / "generic_signed.csv"))
    assert [r.amount for r in recs] == [Decimal("250.00"), Decimal("250.00"), Decimal("-12.5")]
    assert recs[0].counterparty_tax_id == "EE100931558"
    assert recs[0].purpose == "Invoice 17, January"
    assert recs[1].value_date is None and recs[1].bank_reference is None


def test_unknown_layout_lists_closest_profiles(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("Datum;Betrag;Empfaenger\n01.01.2025;1,00;X\n", encoding="utf-8")
    with pytest.raises(UnknownFormatError) as err:
        registry.detect(path, "bank")
    message = str(err.value)
    assert str(path) in message
    assert "no bank CSV profile matches" in message
    assert "de_sparkasse_csv_camt_v2" in message and "generic_signed.yaml" in message


@pytest.mark.parametrize(("text", "decimal", "thousands", "expected"), [
    ("82 604,01", ",", " ", Decimal("82604.01")),
    ("5.000,01", ",", ".", Decimal("5000.01")),
    ("-1,234.50", ".", ",", Decimal("-1234.50")),
    ("0.12345", ".", None, Decimal("0.12345")),
    ("82\u00a0604,01", ",", " ", Decimal("82604.01")),
])
def test_amount_formats(text, decimal, thousands, expected):
    assert parse_decimal(text, path="f", record=1, field_name="amount", decimal=decimal,
                         thousands=thousands) == expected


@pytest.mark.parametrize("text", ["1.5", "0.123456", "abc", "NaN", ""])
def test_amount_rejections(text):
    from clientbase.errors import ParseError

    with pytest.raises(ParseError):
        parse_decimal(text, path="f", record=1, field_name="amount", decimal=",",
                      thousands=" " if text != "1.5" else None)
