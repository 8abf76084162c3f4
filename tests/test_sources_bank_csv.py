import datetime as dt
from decimal import Decimal

import pytest

from clientbase.errors import ParseError, UnknownFormatError
from sources import bank_csv, registry
from sources.base import BankTxn, FileInfo, Rejected, parse_decimal


def test_sparkasse_cp1252_golden(fixtures):
    path = fixtures / "bank" / "sparkasse_cp1252.csv"
    assert registry.detect(path, "bank") is bank_csv
    info, *recs = bank_csv.read(path)
    assert info == FileInfo(encoding="cp1252")
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
    recs = [r for r in bank_csv.read(fixtures / "bank" / "generic_signed.csv") if not isinstance(r, FileInfo)]
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
    assert "Closest: nl_ing (missing headers: Af Bij" in message  # shares the "Datum" header
    assert "generic_signed.yaml" in message


@pytest.mark.parametrize(("text", "decimal", "thousands", "expected"), [
    ("82 604,01", ",", " ", Decimal("82604.01")),
    ("5.000,01", ",", ".", Decimal("5000.01")),
    ("-1,234.50", ".", ",", Decimal("-1234.50")),
    ("0.12345", ".", None, Decimal("0.12345")),
    ("82\u00a0604,01", ",", " ", Decimal("82604.01")),
    ("-999 999 999 999 999 999,99999", ",", " ", Decimal("-999999999999999999.99999")),  # DECIMAL(23, 5)'s limit
    ("000 000 000 000 000 000 000,5", ",", " ", Decimal("0.5")),  # leading zeros are not digits of the value
])
def test_amount_formats(text, decimal, thousands, expected):
    assert parse_decimal(text, path="f", record=1, field_name="amount", decimal=decimal,
                         thousands=thousands) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("1.5", "has '.' but the layout's decimal separator is ','"),
    ("0,123456", "has more than 5 decimals"), ("1 000 000 000 000 000 000,00", "has more than 18 digits before the"),
    ("abc", "is not a number"), ("NaN", "is not a number"), ("Infinity", "is not a number"), ("", "is not a number"),
    # Decimal() alone would take these; the DuckDB fast paths never did (parity)
    ("1e5", "is not a number"), ("1_000", "is not a number"), ("\u0661\u0662", "is not a number"),
])
def test_amount_rejections(text, reason):
    from clientbase.errors import ParseError

    with pytest.raises(ParseError, match=reason):
        parse_decimal(text, path="f", record=1, field_name="amount", decimal=",",
                      thousands=" " if text != "1.5" else None)


GOLDEN = [
    # file, profile, encoding, [(amount, counterparty, own account, status)], extra checks on record 1
    ("dkb.csv", "de_dkb", "utf-8-sig",
     [("5000.01", "Müller & Söhne GmbH", "BOOK"), ("-82.60", "Stadtwerke Köln", "BOOK"),
      ("1234.50", "Weiß Logistik KG", "PDNG")],
     {"own_account": "DE12120300001020304050", "currency": "EUR", "end_to_end_id": "RE2025001"}),
    ("ing.csv", "nl_ing", "utf-8-sig",
     [("250.00", "Bakkerij de Gouden Korenaar B.V.", "BOOK"), ("-1000.00", "Belastingdienst", "BOOK")],
     {"own_account": "NL91INGB0001234567", "counterparty_account": "NL20RABO0123456789"}),
    ("rabobank.csv", "nl_rabobank", "utf-8-sig",
     [("1250.00", "Van der Berg Transport B.V.", "BOOK"), ("-19.95", None, "BOOK")],
     {"purpose": "Factuur 2025-0042 deel 2 van 2", "bank_reference": "000000000000007213",
      "end_to_end_id": "E2E-0042", "counterparty_bic": "INGBNL2A"}),
    ("csob_cp1250.csv", "cz_csob_cp1250", "cp1250",
     [("82604.01", "Žluťoučký kůň s.r.o.", "BOOK"), ("-1500.00", "Poplatky", "BOOK")],
     {"currency": "CZK", "purpose": "20250042 Faktura č. 42", "bank_reference": "9876543210"}),
    ("swedbank_lv.csv", "baltic_swedbank", "cp1257",
     [("120.00", "SIA Rīgas Koks", "BOOK"), ("-300.00", "Valsts ieņēmumu dienests", "BOOK")],
     {"purpose": "Rēķins 2025/17", "end_to_end_id": "RF18539007547034", "source_line": 3}),
    ("sberbank_cp1251.csv", "ru_sberbank_business", "cp1251",
     [("125000.00", 'ООО "Ромашка"', "BOOK"), ("-30000.00", "УФК по г. Санкт-Петербургу", "BOOK")],
     {"own_account": "40702810900000012345", "currency": "RUB", "counterparty_tax_id": "7707083893",
      "source_line": 6, "bank_reference": None}),  # '№ документа' is the payer's order number, no key
    ("alfa_cp1251.csv", "ru_alfa", "cp1251",
     [("5000.00", "ИП Иванов Иван Иванович", "BOOK"), ("-1200.50", "ПАО Ростелеком", "BOOK")],
     {"counterparty_bic": "044525593", "counterparty_tax_id": "500100732259", "bank_reference": None}),
    ("vtb_cp1251.csv", "ru_vtb", "cp1251",
     [("-82604.01", 'АО "Поставщик"', "BOOK"), ("1000000.00", 'ООО "Крупный Клиент"', "BOOK")],
     {"currency": "RUB"}),
    ("generic_debit_credit.csv", "generic_debit_credit", "utf-8-sig",
     [("1500.00", "Kowalski Sp. z o.o.", "BOOK"), ("-99.99", "Orange Polska", "BOOK")],
     {"currency": "PLN", "counterparty_tax_id": "5260250274"}),
    ("generic_direction.csv", "generic_direction", "utf-8-sig",
     [("2500.00", "Tallinn Trade OÜ", "BOOK"), ("-12.00", "Bank", "BOOK")], {"bank_reference": "X1"}),
]


@pytest.mark.parametrize(("name", "profile", "encoding", "rows", "first"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_shipped_profiles_golden(fixtures, name, profile, encoding, rows, first):
    path = fixtures / "bank" / "csv" / name
    assert registry.detect(path, "bank") is bank_csv
    layout = bank_csv.layout_for(path.read_bytes()[:65536])
    assert (layout.profile.name, layout.encoding) == (profile, encoding)
    recs = [r for r in bank_csv.read(path) if not isinstance(r, FileInfo)]
    assert all(isinstance(r, BankTxn) for r in recs), [r for r in recs if isinstance(r, Rejected)]
    assert [(str(r.amount), r.counterparty_name, r.status) for r in recs] == [
        (str(Decimal(a)), c, s) for a, c, s in rows]
    for field_name, expected in first.items():
        assert getattr(recs[0], field_name) == expected, field_name


def test_every_shipped_profile_has_a_golden_file():
    assert {p.name for p in bank_csv.profiles()} == {g[1] for g in GOLDEN} | {
        "de_sparkasse_csv_camt_v2", "generic_signed"}
    assert len(bank_csv.profiles()) >= 12


def test_debit_and_credit_both_filled_is_quarantined(tmp_path):
    path = tmp_path / "dc.csv"
    path.write_text("account,date,debit,credit,currency,counterparty\nA1,2025-03-03,1.00,2.00,EUR,X\n")
    (rec,) = (r for r in bank_csv.read(path) if not isinstance(r, FileInfo))
    assert isinstance(rec, Rejected) and rec.reason == "exactly one of the debit and credit columns must be filled"


def test_unknown_direction_mark_is_quarantined(fixtures, tmp_path):
    text = (fixtures / "bank" / "csv" / "generic_direction.csv").read_text(encoding="utf-8")
    path = tmp_path / "dir.csv"
    path.write_text(text.replace(";C;", ";X;"), encoding="utf-8")
    rec = next(r for r in bank_csv.read(path) if not isinstance(r, FileInfo))
    assert isinstance(rec, Rejected) and rec.reason == "direction 'X' is not one of ['C', 'D']"


def test_missing_preamble_account_is_a_clear_error(fixtures, tmp_path):
    data = (fixtures / "bank" / "csv" / "dkb.csv").read_text(encoding="utf-8-sig")
    path = tmp_path / "dkb.csv"
    path.write_text(data.replace('"Girokonto";"DE12 1203 0000 1020 3040 50"', '"Konto";""'), encoding="utf-8")
    with pytest.raises(ParseError, match="own_account_pattern"):
        list(bank_csv.read(path))
