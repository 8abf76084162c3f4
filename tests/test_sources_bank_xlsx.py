import datetime as dt
from decimal import Decimal

from sources import bank_xlsx, registry
from sources.base import BankTxn, Rejected
from tests.xlsx import write_xlsx

HEADER = ["Auftragskonto", "Buchungstag", "Valutadatum", "Buchungstext", "Verwendungszweck", "Glaeubiger ID",
          "Mandatsreferenz", "Kundenreferenz (End-to-End)", "Sammlerreferenz", "Lastschrift Ursprungsbetrag",
          "Auslagenersatz Ruecklastschrift", "Beguenstigter/Zahlungspflichtiger", "Kontonummer/IBAN",
          "BIC (SWIFT-Code)", "Betrag", "Waehrung", "Info"]


def row(day, purpose, name, iban, amount, info="Umsatz gebucht"):
    return ["DE02120300000000202051", day, day, "GUTSCHR.", purpose, None, None, None, None, None, None, name,
            iban, None, amount, "EUR", info]


def test_xlsx_with_typed_cells_and_a_preamble(tmp_path):
    path = write_xlsx(tmp_path / "export.xlsx", [
        ["Umsatzanzeige", "Sparkasse KölnBonn"],
        [],
        HEADER,
        row(dt.date(2025, 3, 3), "RE 2025-001", "Müller & Söhne GmbH", "DE89370400440532013000", 82604.01),
        row(dt.date(2025, 3, 4), "Strom", "Stadtwerke Köln", "DE44500105175407324931", -0.1),
        row("05.03.25", "Text cells too", "Weiß Logistik KG", "DE27100777770209299700", "1.234,50",
            "Umsatz vorgemerkt"),
        row(dt.date(2025, 3, 6), "bad", "X", "DE1", "zwölf"),
    ])
    assert registry.detect(path, "bank") is bank_xlsx
    recs = list(bank_xlsx.read(path))
    txns = [r for r in recs if isinstance(r, BankTxn)]
    assert [(t.booking_date, t.amount, t.counterparty_name, t.status) for t in txns] == [
        (dt.date(2025, 3, 3), Decimal("82604.01"), "Müller & Söhne GmbH", "BOOK"),
        (dt.date(2025, 3, 4), Decimal("-0.1"), "Stadtwerke Köln", "BOOK"),
        (dt.date(2025, 3, 5), Decimal("1234.50"), "Weiß Logistik KG", "PDNG"),
    ]
    (bad,) = (r for r in recs if isinstance(r, Rejected))
    assert (bad.record_number, bad.source_line, bad.reason) == (4, 7, "amount 'zwölf' is not a number")


def test_workbook_is_not_mistaken_for_an_archive(tmp_path):
    path = write_xlsx(tmp_path / "x.xlsx", [["a"]])
    assert bank_xlsx.is_workbook(path)
