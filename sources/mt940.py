"""SWIFT MT940 (statement) and MT942 (interim report), parsed with the ``mt-940`` library.

The file is read line by line and cut into messages at each ``:20:``; each message is parsed on its own, so
memory holds one statement at a time. ``:86:`` details are split for the two structured styles in the wild:

- German (DFÜ-Abkommen) ``?20..?29`` sub-fields with SEPA keywords ``EREF+``/``SVWZ+``: the library's
  ``transaction_details_post_processor`` (applicant name / IBAN / BIC, purpose, end-to-end reference);
- Dutch ``/TRTP/…/IBAN/…/BIC/…/NAME/…/REMI/…/EREF/…`` (Rabobank, ING, ABN AMRO; also ``/CNTP/``);

anything else is kept whole as the purpose, with an INN (Russian tax id) picked out when present.
The encoding is detected by the deterministic rule in ``sources/text.py`` and recorded in the manifest.

``read`` is the reference implementation; ingestion uses ``load_bulk`` (``sources/mt940_bulk.py``), the
set-based path that gives the same rows, rejections, balances and errors. It hands every message outside its
plain subset to ``message_records`` (one message -> records, shared with ``read``), so the library's rules
live in one place.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import mt940 as mt940_lib
from mt940 import processors
from mt940.options import Options

from clientbase.errors import ParseError
from sources import text
from sources.base import Balance, BankTxn, BulkResult, FileInfo, Record, Rejected, clean, exact_amount

# the library logs every tag it fails to match at ERROR level; a bad record is reported once, via quarantine
logging.getLogger("mt940").setLevel(logging.CRITICAL)

NAME = "mt940"
KIND = "bank"
MAX_LINE_CHARS = 10_000

_TAG = re.compile(r"^:(20|25|28C?|60[FM]|61|62[FM]|64|86|13D?|34F|90[CD]):", re.MULTILINE)
_DUTCH_KEYS = ("TRTP", "IBAN", "BIC", "NAME", "REMI", "EREF", "CSID", "MARF", "ORDP", "BENM", "CNTP", "ADDR",
               "PURP", "SVCL", "ULTB", "ULTD", "RTRN", "ISDT")
_DUTCH = re.compile(r"/(" + "|".join(_DUTCH_KEYS) + r")/")
_INN = re.compile(r"\bИНН\s*:?\s*(\d{10}|\d{12})\b")


def sniff(head: bytes, filename: str) -> bool:
    sample = head[:8192].decode("latin-1")
    return bool(re.search(r"^:20:", sample, re.MULTILINE) and re.search(r"^:25:", sample, re.MULTILINE)
                and (re.search(r"^:61:", sample, re.MULTILINE) or re.search(r"^:6[02][FM]:", sample, re.MULTILINE)
                     or re.search(r"^:13D?:", sample, re.MULTILINE)))


def _messages(lines: Iterator[str], path: str) -> Iterator[tuple[int, str]]:
    """(first line number, message text) for each ``:20:``-started message; SWIFT block wrappers dropped."""
    buffer: list[str] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_CHARS:
            raise ParseError(f"line longer than {MAX_LINE_CHARS} characters: not an MT940 file", path=path,
                             record=None, field=f"line {number}")
        stripped = line.rstrip("\r\n")
        if stripped.startswith("{1:") or stripped.startswith("{2:"):
            stripped = stripped[stripped.find("{4:") + 3:] if "{4:" in stripped else ""
        if stripped in ("-}", "-", "}") or stripped.startswith("{5:") or stripped.startswith("-}{5:"):
            continue
        if stripped.startswith(":20:") and buffer:
            yield start, "\n".join(buffer)
            buffer = []
        if not buffer:
            start = number
        if stripped:
            buffer.append(stripped)
    if buffer:
        yield start, "\n".join(buffer)


def _split_dutch(details: str) -> dict[str, str]:
    parts = _DUTCH.split(details.replace("\n", ""))
    fields: dict[str, str] = {}
    for key, value in zip(parts[1::2], parts[2::2], strict=False):
        fields.setdefault(key, value.strip("/ ").strip())
    if "CNTP" in fields and "IBAN" not in fields:  # /CNTP/account/BIC/name/city/
        account, bic, name, *_ = (fields["CNTP"].split("/") + ["", "", ""])[:4]
        fields.update(IBAN=account, BIC=bic, NAME=name)
    return fields


def _counterparty(data: dict) -> dict[str, str | None]:
    if data.get("transaction_details") is None and "purpose" in data:  # German ?20 style, already split
        name = data.get("applicant_name")
        return {"counterparty_name": name, "counterparty_account": data.get("applicant_iban"),
                "counterparty_bic": data.get("applicant_bin"), "purpose": data.get("purpose"),
                "end_to_end_id": data.get("end_to_end_reference"), "counterparty_tax_id": None,
                "posting_text": data.get("posting_text")}
    details = data.get("transaction_details") or ""
    if _DUTCH.search(details):
        f = _split_dutch(details)
        return {"counterparty_name": f.get("NAME"), "counterparty_account": f.get("IBAN"),
                "counterparty_bic": f.get("BIC"), "purpose": f.get("REMI"), "end_to_end_id": f.get("EREF"),
                "counterparty_tax_id": None}
    inn = _INN.search(details)
    return {"counterparty_name": None, "counterparty_account": None, "counterparty_bic": None,
            "purpose": details.replace("\n", " "), "end_to_end_id": None,
            "counterparty_tax_id": inn.group(1) if inn else None}


def _parser() -> mt940_lib.models.Transactions:
    return mt940_lib.models.Transactions(
        processors={"post_transaction_details": [processors.transaction_details_post_processor]},
        # reversal_sign: RC (reversal of a credit: money going back out) is a debit, RD a credit
        options=Options(applicant_iban=True, merge_keeps_values=True, case_insensitive_marks=True,
                        unbounded_details=True, strip_bom=True, gvc_leading_text=True, timezone_offset=True,
                        reversal_sign=True),
    )


def _date(value: dt.date | None) -> dt.date | None:
    """The library's Date subclass -> a plain date."""
    return dt.date(value.year, value.month, value.day) if value is not None else None


def german_iban(blz: str, account: str) -> str:
    """ISO 13616 IBAN of a German BLZ + account number (check digits by MOD 97-10)."""
    bban = blz + account.zfill(10)
    check = 98 - int(bban + "131400") % 97  # 'DE' -> 13 14, then '00'
    return f"DE{check:02d}{bban}"


def _own_account(raw: str | None) -> tuple[str | None, str | None]:
    """':25:' -> (account, currency suffix if any): 'NL91RABO0315273637EUR' -> ('NL91RABO0315273637', 'EUR')."""
    if not raw:
        return None, None
    value = raw.strip()
    german = re.fullmatch(r"(\d{8})/(\d{1,10})(?:[A-Z]{3})?", value)
    if german:  # BLZ/Kontonummer: the same account as the IBAN other formats show
        return german_iban(german.group(1), german.group(2)), value[-3:] if value[-3:].isalpha() else None
    match = re.fullmatch(r"([A-Z]{2}\d{2}[A-Z0-9]{10,30}?)([A-Z]{3})", value)
    return (match.group(1), match.group(2)) if match else (value, None)


def read(path: Path) -> Iterator[Record]:
    name = str(path)
    with path.open("rb") as fh:
        encoding = text.detect(fh.read(text.SAMPLE_BYTES), name)
    yield FileInfo(encoding=encoding)
    record = 0
    with path.open("r", encoding=encoding, errors="strict", newline="") as fh:
        try:
            lines = iter(lambda: fh.readline(MAX_LINE_CHARS + 1), "")
            for line_number, message in _messages(lines, name):
                records = message_records(message, line_number, record, name)
                yield from records
                record = records_used(records, record)
        except UnicodeDecodeError as exc:
            raise ParseError(f"not valid {encoding} after the first megabyte ({exc.reason}); export the file "
                             "as UTF-8", path=name) from None


def records_used(records: list[Record], record: int) -> int:
    """The record counter after a message's records (a balance shares the number of the entry before it)."""
    return records[-1].record_number if records else record


def message_records(message: str, line_number: int, record: int, name: str) -> list[Record]:
    """The records of one message (``_messages``), numbered after ``record``: its entries (or one rejection)
    and its balance. ``read`` uses it for every message, ``load_bulk`` for those outside its plain subset."""
    out: list[Record] = []
    try:
        statement = _parser()
        statement.parse(message)
    except Exception as exc:  # the library raises assorted errors on malformed tags
        return [Rejected(record + 1, line_number, f"malformed MT940 message: {type(exc).__name__}: {exc}",
                         raw=message[:2000])]
    account, account_ccy = _own_account(statement.data.get("account_identification"))
    if account is None:
        return [Rejected(record + 1, line_number, "message has no :25: account identification", raw=message[:2000])]
    opening = statement.data.get("final_opening_balance") or statement.data.get("opening_balance")
    closing = statement.data.get("final_closing_balance") or statement.data.get("closing_balance")
    try:
        for balance, tag in ((opening, ":60F:"), (closing, ":62F:")):
            if balance is not None:
                exact_amount(balance.amount.amount, path=name, record=record + 1, field_name=tag)
    except ParseError as exc:  # the balance row shares the entries' record numbers: the message is refused
        return [Rejected(record + 1, line_number, f"malformed MT940 message: {exc.reason}", raw=message[:2000])]
    booked_total = Decimal(0)
    for tx in statement:
        record += 1
        d = tx.data
        try:
            amount = exact_amount(d["amount"].amount, path=name, record=record, field_name=":61:")
            currency = d.get("currency") or d["amount"].currency or account_ccy or statement.currency
            if not currency:
                raise ParseError("no currency on the entry or the statement", path=name, record=record,
                                 field=":61:")
            booked_total += amount
            party = _counterparty(d)
            # only the bank's own reference (after '//') identifies the entry: the account owner's reference
            # repeats (a standing order's 'RENT' every month), so it is not a dedupe key
            bank_ref = d.get("bank_reference") or None
            out.append(BankTxn(
                record_number=record, source_line=line_number, own_account=account,
                booking_date=_date(d.get("entry_date") or d["date"]), value_date=_date(d.get("date")),
                amount=Decimal(amount), currency=currency,
                counterparty_name=clean(party["counterparty_name"]),
                counterparty_tax_id=party["counterparty_tax_id"],
                counterparty_account=clean(party["counterparty_account"]),
                counterparty_bic=clean(party["counterparty_bic"]),
                purpose=clean(party["purpose"]) or clean(party.get("posting_text")),
                bank_reference=clean(bank_ref), end_to_end_id=clean(party["end_to_end_id"]),
                status="BOOK", is_reversal=str(d.get("status", "")).upper().startswith("R"),
            ))
        except (KeyError, TypeError, ParseError) as exc:
            reason = exc.reason if isinstance(exc, ParseError) else f"incomplete :61: entry ({exc})"
            out.append(Rejected(record, line_number, reason, raw=str(d)[:2000]))
    if opening is not None or closing is not None:
        ref = closing or opening
        out.append(Balance(
            record_number=record, own_account=account, statement_id=statement.data.get("transaction_reference"),
            balance_date=_date(ref.date), opening=opening.amount.amount if opening else None,
            closing=closing.amount.amount if closing else None, currency=ref.amount.currency,
            entries_total=booked_total,
        ))
    return out


def load_bulk(con, path: Path, *, file_hash: str, source_file: str, run_id: str, scratch: Path) -> BulkResult:
    """The fast path used by ingestion: polars does the per-line work (see ``sources/mt940_bulk.py``)."""
    from sources import mt940_bulk

    loaded, quarantined, encoding = mt940_bulk.load(con, path, file_hash=file_hash, source_file=source_file,
                                                    run_id=run_id)
    return BulkResult(loaded, quarantined, encoding)
