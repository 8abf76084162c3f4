"""1CClientBankExchange: the Russian/CIS accounting exchange format (bank <-> 1C:Enterprise).

Text of ``Key=Value`` lines: a header, ``СекцияРасчСчет … КонецРасчСчет`` balance sections,
``СекцияДокумент=<type> … КонецДокумента`` documents, and ``КонецФайла``. Rules:

- encoding from ``Кодировка=`` (Windows -> cp1251, DOS -> cp866, UTF-8), verified against the bytes;
- keys are matched case-insensitively (banks differ);
- a document's direction comes from comparing the payer/payee accounts with the file's own accounts
  (``РасчСчет``), never from which date field is filled;
- the currency comes from the own account number (digits 6-8 of a 20-digit account: 810/643 RUB, 840 USD…);
- a file without ``КонецФайла`` is truncated: an error, not a partial load.

``read`` is the reference implementation; ingestion uses ``load_bulk`` (``sources/onec_bulk.py``), the
set-based path that gives the same rows, rejections, balances and errors. Both use the helpers here (line
rules, keys, error texts, sections, documents), so a rule lives in one place.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from clientbase.errors import ParseError
from sources import text
from sources.base import (
    Balance,
    BankTxn,
    BulkResult,
    FileInfo,
    Record,
    Rejected,
    clean,
    parse_date,
    parse_decimal,
)

NAME = "1c"
KIND = "bank"
MAGIC = "1CClientBankExchange"
MAX_LINE_CHARS = 10_000
_ENCODINGS = {"windows": "cp1251", "dos": "cp866", "utf-8": "utf-8", "utf8": "utf-8"}
_CURRENCY_CODES = {"810": "RUB", "643": "RUB", "840": "USD", "978": "EUR", "156": "CNY", "398": "KZT",
                   "933": "BYN", "980": "UAH", "826": "GBP", "756": "CHF", "417": "KGS", "860": "UZS"}
INN_PREFIX = r"^ИНН\s*\d{10,12}\s*"  # 'ИНН 7707083893 ООО "Ромашка"' as a payer name: the prefix is dropped
_INN_PREFIX = re.compile(INN_PREFIX, re.IGNORECASE)
DATE_FORMAT = "%d.%m.%Y"


def sniff(head: bytes, filename: str) -> bool:
    return head.lstrip(b"\xef\xbb\xbf").lstrip().startswith(MAGIC.encode())


def _declared_encoding(head: bytes, path: str) -> str:
    for candidate in ("cp1251", "cp866", "utf-8"):
        sample = head.decode(candidate, errors="ignore")
        match = re.search(r"^кодировка=(.*)$", sample, re.IGNORECASE | re.MULTILINE)
        if match:
            value = match.group(1).strip().lower()
            if value not in _ENCODINGS:
                raise ParseError(f"unknown Кодировка={match.group(1).strip()!r} (expected Windows, DOS or UTF-8)",
                                 path=path, field="Кодировка")
            return _ENCODINGS[value]
    raise ParseError("no Кодировка= line in the header: cannot tell the file's encoding", path=path,
                     field="Кодировка")


def currency_of(account: str, path: str) -> str:
    digits = account.strip()
    if len(digits) == 20 and digits.isdigit():
        code = digits[5:8]
        if code in _CURRENCY_CODES:
            return _CURRENCY_CODES[code]
        raise ParseError(f"account {digits}: currency code {code} (digits 6-8) is not one this reader knows",
                         path=path, field="РасчСчет")
    raise ParseError(f"account {digits!r} is not a 20-digit account number: cannot tell its currency",
                     path=path, field="РасчСчет")


@dataclass
class Section:
    account: str
    start: dt.date | None
    end: dt.date | None
    opening: Decimal | None
    closing: Decimal | None
    line: int
    total: Decimal = field(default=Decimal(0))


# Keys (case-folded) that give the file its structure; shared with the set-based path (sources/onec_bulk.py).
SECTION, SECTION_END = "секциярасчсчет", "конецрасчсчет"
DOCUMENT, DOCUMENT_END = "секциядокумент", "конецдокумента"
FILE_END = "конецфайла"
OWN_ACCOUNT = "расчсчет"
PURPOSE = "назначениеплатежа"
# A document's keys (case-folded)
AMOUNT, DATE = "сумма", "дата"
PAYER, PAYEE = "плательщик", "получатель"
BOOKED = {PAYER: "датасписано", PAYEE: "датапоступило"}  # the booking day on the payer's / the payee's side


def party_keys(role: str) -> tuple[str, str, str, str, str, str]:
    """(account, account also spelt, name, name with its INN prefix, INN, BIC) keys of a payer or payee."""
    return f"{role}счет", f"{role}расчсчет", f"{role}1", role, f"{role}инн", f"{role}бик"


def encoding_of(path: Path) -> str:
    """The file's encoding: ``Кодировка=`` verified against the first bytes (U+FFFD and mismatches refused)."""
    name = str(path)
    with path.open("rb") as fh:
        head = fh.read(text.SAMPLE_BYTES)
    return text.detect(head, name, declared=_declared_encoding(head[:65536], name))


def split_line(line: str) -> tuple[str, str, str]:
    """(the stripped line, its case-folded key, its value) of one line as read from the file."""
    line = line.strip().lstrip("\ufeff")
    key, _, value = line.partition("=")
    return line, key.strip().casefold(), value.strip()


def put(current: dict[str, str], key: str, value: str) -> None:
    """Add one ``key=value`` line to the open section: the first value of a key wins; ``НазначениеПлатежа2..``
    continue the purpose."""
    if key.startswith(PURPOSE) and key != PURPOSE and value:
        current[PURPOSE] = f"{current.get(PURPOSE, '')} {value}".strip()
    else:
        current.setdefault(key, value)


def line_too_long(number: int, name: str) -> ParseError:
    return ParseError(f"line {number} is longer than {MAX_LINE_CHARS} characters", path=name)


def not_1c(name: str) -> ParseError:
    return ParseError(f"the first line must be {MAGIC}", path=name)


def after_end(number: int, name: str) -> ParseError:
    return ParseError(f"line {number}: content after КонецФайла", path=name)


def bad_bytes(encoding: str, reason: str, name: str) -> ParseError:
    return ParseError(f"not valid {encoding} ({reason}) although the header declares it", path=name)


def unclosed(number: int, started_at: int, name: str) -> ParseError:
    return ParseError(f"line {number}: a section starts before the one opened at line {started_at} is closed "
                      "(КонецДокумента or КонецРасчСчет missing): the file is damaged; export it again", path=name)


def truncated(name: str, record: int) -> ParseError:
    return ParseError("the file ends without КонецФайла: it is truncated; export it again", path=name,
                      record=record or None)


def read(path: Path) -> Iterator[Record]:
    name = str(path)
    encoding = encoding_of(path)
    yield FileInfo(encoding=encoding)
    own: set[str] = set()
    sections: list[Section] = []
    current: dict[str, str] | None = None  # the open section's keys
    started_at = 0
    record = 0
    finished = False
    with path.open("r", encoding=encoding, errors="strict", newline="") as fh:
        try:
            for number, raw_line in enumerate(iter(lambda: fh.readline(MAX_LINE_CHARS + 1), ""), start=1):
                if len(raw_line) > MAX_LINE_CHARS:
                    raise line_too_long(number, name)
                line, key, value = split_line(raw_line)
                if not line:
                    continue
                if number == 1 and line != MAGIC:
                    raise not_1c(name)
                if finished:
                    raise after_end(number, name)
                if key in (SECTION, DOCUMENT) and current is not None:  # never drop the open one silently
                    raise unclosed(number, started_at, name)
                if key == SECTION:
                    current, started_at = {}, number
                elif key == SECTION_END:
                    sections.append(section_of(current or {}, started_at, name))
                    own.add(sections[-1].account)
                    current = None
                elif key == DOCUMENT:
                    current, started_at = {"_type": value}, number
                elif key == DOCUMENT_END:
                    for rec in document(current or {}, own, sections, name, record, started_at):
                        record = rec.record_number
                        yield rec
                    current = None
                elif key == FILE_END:
                    finished = True
                elif current is not None:
                    put(current, key, value)
                elif key == OWN_ACCOUNT and value:
                    own.add(value)
        except UnicodeDecodeError as exc:
            raise bad_bytes(encoding, exc.reason, name) from None
    if not finished:
        raise truncated(name, record)
    for section in sections:
        record += 1
        yield balance_of(section, record, name)


def balance_of(section: Section, record: int, name: str) -> Balance:
    return Balance(record_number=record, own_account=section.account, statement_id=None,
                   balance_date=section.end or section.start or dt.date.min, opening=section.opening,
                   closing=section.closing, currency=currency_of(section.account, name),
                   entries_total=section.total)


def _money(value: str | None, name: str, record: int, field_name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    return parse_decimal(value, path=name, record=record, field_name=field_name,
                         decimal="," if "," in value and "." not in value else ".")


def _day(value: str | None, name: str, record: int, field_name: str) -> dt.date | None:
    return parse_date(value, DATE_FORMAT, path=name, record=record, field_name=field_name) if value else None


def section_of(keys: dict[str, str], line: int, name: str) -> Section:
    account = keys.get(OWN_ACCOUNT)
    if not account:
        raise ParseError(f"СекцияРасчСчет at line {line} has no РасчСчет", path=name, field="РасчСчет")
    return Section(account=account, start=_day(keys.get("датаначала"), name, 0, "ДатаНачала"),
                    end=_day(keys.get("датаконца"), name, 0, "ДатаКонца"),
                    opening=_money(keys.get("начальныйостаток"), name, 0, "НачальныйОстаток"),
                    closing=_money(keys.get("конечныйостаток"), name, 0, "КонечныйОстаток"), line=line)


def _party(keys: dict[str, str], role: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(account, name, INN, BIC) of 'плательщик' or 'получатель'."""
    account_key, account_also, name_key, name_inn_key, inn_key, bic_key = party_keys(role)
    account = keys.get(account_key) or keys.get(account_also)
    name = keys.get(name_key) or _INN_PREFIX.sub("", keys.get(name_inn_key, "")) or None
    return account, clean(name), keys.get(inn_key) or None, keys.get(bic_key) or None


def document(keys: dict[str, str], own: set[str], sections: list[Section], name: str, last: int,
             line: int) -> Iterator[Record]:
    """The records of one document (one per own account it touches), or its rejection."""
    record = last + 1
    try:
        amount = _money(keys.get(AMOUNT), name, record, "Сумма")
        if amount is None:
            raise ParseError("document has no Сумма", path=name, record=record, field="Сумма")
        payer = _party(keys, PAYER)
        payee = _party(keys, PAYEE)
        directions = []
        if payer[0] in own:
            directions.append((payer[0], -amount, payee, keys.get(BOOKED[PAYER])))
        if payee[0] in own:
            directions.append((payee[0], amount, payer, keys.get(BOOKED[PAYEE])))
        if not directions:
            raise ParseError(f"neither the payer account {payer[0]!r} nor the payee account {payee[0]!r} is one "
                             "of the file's own accounts (РасчСчет)", path=name, record=record,
                             field="ПлательщикСчет/ПолучательСчет")
        doc_date = _day(keys.get(DATE), name, record, "Дата")
        for offset, (account, signed, party, booked) in enumerate(directions):
            booking = _day(booked, name, record + offset, "ДатаСписано/ДатаПоступило") or doc_date
            if booking is None:
                raise ParseError("document has no date", path=name, record=record + offset, field="Дата")
            for section in sections:
                if section.account == account and (section.start or booking) <= booking <= (section.end or booking):
                    section.total += signed
            yield BankTxn(
                record_number=record + offset, source_line=line, own_account=account, booking_date=booking,
                value_date=doc_date, amount=signed, currency=currency_of(account, name),
                counterparty_name=party[1], counterparty_tax_id=party[2], counterparty_account=party[0],
                counterparty_bic=party[3], purpose=clean(keys.get(PURPOSE)), bank_reference=None,
                end_to_end_id=None, status="BOOK",
            )
    except ParseError as exc:
        raw = "; ".join(f"{k}={v}" for k, v in keys.items())
        yield Rejected(record, line, exc.reason, raw=raw[:2000])


def load_bulk(con, path: Path, *, file_hash: str, source_file: str, run_id: str, scratch: Path) -> BulkResult:
    """The fast path used by ingestion: polars does the per-line work (see ``sources/onec_bulk.py``)."""
    from sources import onec_bulk

    loaded, quarantined, encoding = onec_bulk.load(con, path, file_hash=file_hash, source_file=source_file,
                                                   run_id=run_id)
    return BulkResult(loaded, quarantined, encoding)
