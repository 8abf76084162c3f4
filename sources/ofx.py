"""OFX / QFX statements: 1.x SGML (unclosed tags) and 2.x XML, parsed leniently with ``ofxparse``.

FITID is the bank reference (the dedupe key). The posting date is taken from the first eight digits of
``DTPOSTED`` (the bank's local calendar day): ofxparse shifts times with a zone offset to UTC, which would move
late-evening postings into the next day, and sometimes the next month.
OFX files are small (one statement per download), so ofxparse reading the whole file is acceptable; files
with a DOCTYPE or ENTITY declaration are refused.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from clientbase.errors import ParseError
from sources import text
from sources.base import Balance, BankTxn, FileInfo, Record, Rejected, clean, exact_amount

NAME = "ofx"
KIND = "bank"
MAX_BYTES = 64 << 20
_BLOCK = re.compile(r"<STMTTRN>(.*?)(?:</STMTTRN>|(?=<STMTTRN>)|(?=</BANKTRANLIST>))", re.S | re.I)
_FIELD = {name: re.compile(rf"<{name}>\s*([^<\r\n]*)", re.I) for name in ("FITID", "DTPOSTED")}


def sniff(head: bytes, filename: str) -> bool:
    sample = head[:4096].lstrip(b"\xef\xbb\xbf").lstrip()
    return sample.startswith(b"OFXHEADER") or b"<?OFX" in sample[:512] or (
        sample[:2048].upper().find(b"<OFX>") >= 0 and b"<STMTTRN" in head.upper())


def _local_days(source: str) -> dict[str, dt.date]:
    days = {}
    for block in _BLOCK.findall(source):
        fitid, posted = (_FIELD[k].search(block) for k in ("FITID", "DTPOSTED"))
        if fitid and posted and re.match(r"\d{8}", posted.group(1).strip()):
            raw = posted.group(1).strip()
            try:
                days[fitid.group(1).strip()] = dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
            except ValueError:
                continue  # not a date: ofxparse rejects the transaction itself
    return days


def read(path: Path) -> Iterator[Record]:
    name = str(path)
    if path.stat().st_size > MAX_BYTES:
        raise ParseError(f"OFX file larger than {MAX_BYTES >> 20} MB: split the download", path=name)
    data = path.read_bytes()
    source, encoding = text.decode(data, name)
    yield FileInfo(encoding=encoding)
    if re.search(r"<!(DOCTYPE|ENTITY)", source, re.I):
        raise ParseError("OFX with a DOCTYPE/ENTITY declaration is refused (possible XXE or entity bomb)",
                         path=name)
    from ofxparse import OfxParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ofx = OfxParser.parse(io.BytesIO(source.encode("utf-8")), fail_fast=False)
        except Exception as exc:  # ofxparse raises assorted errors on damaged files
            raise ParseError(f"not a readable OFX statement ({type(exc).__name__}: {exc})", path=name) from None
    days = _local_days(source)
    record = 0
    for account in getattr(ofx, "accounts", []) or []:
        statement = getattr(account, "statement", None)
        if statement is None or not hasattr(statement, "transactions"):
            continue  # investment / credit-card summaries carry no bank transactions
        currency = (getattr(statement, "currency", None) or "").upper()
        own = clean(getattr(account, "account_id", None))
        total = Decimal(0)
        for tx in statement.transactions:
            record += 1
            try:
                if not own or not currency:
                    raise ParseError("statement has no ACCTID or CURDEF", path=name, record=record)
                if tx.amount is None or tx.date is None:
                    raise ParseError("transaction has no TRNAMT or DTPOSTED", path=name, record=record,
                                     field="TRNAMT/DTPOSTED")
                amount = exact_amount(Decimal(tx.amount), path=name, record=record, field_name="TRNAMT")
                total += amount
                yield BankTxn(
                    record_number=record, source_line=None, own_account=own,
                    booking_date=days.get(tx.id, tx.date.date()), value_date=None, amount=amount,
                    currency=currency, counterparty_name=clean(tx.payee), purpose=clean(tx.memo),
                    bank_reference=clean(tx.id), status="BOOK",
                )
            except ParseError as exc:
                yield Rejected(record, None, exc.reason, raw=f"FITID={getattr(tx, 'id', None)}")
        for warning in getattr(statement, "discarded_entries", []) or []:
            record += 1
            yield Rejected(record, None, f"entry ofxparse could not read: {warning}"[:500])
        balance = getattr(statement, "balance", None)
        if own and currency and balance is not None:
            record += 1
            try:
                exact_amount(Decimal(balance), path=name, record=record, field_name="LEDGERBAL/BALAMT")
            except ParseError as exc:
                yield Rejected(record, None, f"balance: {exc.reason}")
                continue
            as_of = getattr(statement, "balance_date", None) or getattr(statement, "end_date", None)
            yield Balance(record_number=record, own_account=own, statement_id=None,
                          balance_date=as_of.date() if as_of else dt.date.min, opening=None,
                          closing=Decimal(balance), currency=currency, entries_total=total)
