import datetime as dt
from decimal import Decimal

import pytest

from clientbase.errors import ParseError
from sources import ofx, registry
from sources.base import Balance, BankTxn, Rejected


def test_ofx1_sgml(fixtures):
    path = fixtures / "bank" / "ofx1_sgml_chase.qfx"
    assert registry.detect(path, "bank") is ofx
    recs = list(ofx.read(path))
    txns = [r for r in recs if isinstance(r, BankTxn)]
    assert [(t.bank_reference, t.booking_date, t.amount) for t in txns] == [
        ("202503050001", dt.date(2025, 3, 5), Decimal("2500.00")),
        ("202503070002", dt.date(2025, 3, 7), Decimal("-45.10")),
        ("202503050003", dt.date(2025, 3, 5), Decimal("2500.00")),
    ]
    assert (txns[0].own_account, txns[0].currency, txns[0].counterparty_name, txns[0].purpose) == (
        "4417000123", "USD", "ACME CORP", "INVOICE 1001")
    balance = next(r for r in recs if isinstance(r, Balance))
    assert (balance.opening, balance.closing) == (None, Decimal("12454.90"))


def test_ofx2_xml(fixtures):
    recs = list(ofx.read(fixtures / "bank" / "ofx2_xml.ofx"))
    txns = [r for r in recs if isinstance(r, BankTxn)]
    assert [(t.bank_reference, t.amount, t.currency) for t in txns] == [
        ("SG-0001", Decimal("8800.00"), "SGD"), ("SG-0002", Decimal("-12.00"), "SGD")]


def test_local_posting_day_is_kept(tmp_path, fixtures):
    text = (fixtures / "bank" / "ofx1_sgml_chase.qfx").read_text()
    path = tmp_path / "late.qfx"
    path.write_text(text.replace("<DTPOSTED>20250307", "<DTPOSTED>20250331230000[-5:EST]"))
    txns = [r for r in ofx.read(path) if isinstance(r, BankTxn)]
    assert txns[1].booking_date == dt.date(2025, 3, 31)  # not April 1st in UTC


def test_entity_declarations_are_refused(tmp_path):
    path = tmp_path / "evil.ofx"
    path.write_text('<?xml version="1.0"?><!DOCTYPE OFX [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                    "<?OFX OFXHEADER=\"200\"?><OFX><STMTTRN>&x;</STMTTRN></OFX>")
    with pytest.raises(ParseError, match="DOCTYPE/ENTITY declaration is refused"):
        list(ofx.read(path))


def test_amounts_the_warehouse_cannot_hold_exactly_are_quarantined(tmp_path, fixtures):
    text = (fixtures / "bank" / "ofx1_sgml_chase.qfx").read_text()
    path = tmp_path / "six.qfx"
    path.write_text(text.replace("<TRNAMT>-45.10", "<TRNAMT>-45.100001").replace("<BALAMT>12454.90",
                                                                               "<BALAMT>12454.900001"))
    recs = list(ofx.read(path))
    rejected = [(r.record_number, r.reason) for r in recs if isinstance(r, Rejected)]
    assert rejected == [(2, "amount '-45.100001' has more than 5 decimals"),
                        (4, "balance: amount '12454.900001' has more than 5 decimals")]
    assert not [r for r in recs if isinstance(r, Balance)]
    assert len([r for r in recs if isinstance(r, BankTxn)]) == 2
