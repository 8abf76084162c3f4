"""ISO 20022 camt.053 / camt.052 / camt.054 (any version): bank-to-customer statements, reports, notifications.

Elements are matched on local names, so every schema version (.02, .04, .08, ...) parses the same way. The file is
read with ``lxml.etree.iterparse`` and each ``Ntry`` is released once handled: memory stays flat for any file size.
Security: no DTD is accepted (XXE / billion laughs), entities are never resolved, no network access.

One entry yields one record per ``TxDtls`` (split amounts) or one record when it has none (the entry's
``AddtlNtryInf`` is then the purpose). Sign comes from ``CdtDbtInd``; ``RvslInd`` is kept as ``is_reversal``.

``read`` is the reference implementation; ingestion uses ``load_bulk`` (``sources/camt_bulk.py``), a columnar
tokenizer for the regular subset of XML that banks write, which gives the same rows, rejections, balances and
errors and hands everything else to ``read``. Both use the pieces here (``balance``, ``statement_balance``,
``entry_records``, the constants), so a rule lives in one place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

from lxml import etree

from clientbase.errors import ParseError
from sources.base import Balance, BankTxn, BulkResult, Record, Rejected, clean, parse_decimal

NAME = "camt"
KIND = "bank"

CONTAINERS = {"Stmt", "Rpt", "Ntfctn"}  # camt.053 / camt.052 / camt.054
BOOKED = "BOOK"  # the status of an entry without Sts; only booked entries count in a statement's entries_total
NOT_PROVIDED = "NOTPROVIDED"  # an EndToEndId that means none


def sniff(head: bytes, filename: str) -> bool:
    text = head[:4096].decode("utf-8", errors="ignore")
    return "urn:iso:std:iso:20022:tech:xsd:camt.05" in text


_LOCAL_NAMES: dict[str, str] = {}


def _local(tag: object) -> str:
    """Local name of a tag ('{urn:...}Ntry' -> 'Ntry'); comments/PIs have non-string tags."""
    if not isinstance(tag, str):
        return ""
    name = _LOCAL_NAMES.get(tag)
    if name is None:
        name = _LOCAL_NAMES[tag] = tag.rpartition("}")[2]
    return name


_PATHS: dict[tuple[str, ...], str] = {}


def _child(el: etree._Element | None, *path: str) -> etree._Element | None:
    """Follow local names in any namespace (lxml's C ElementPath with '{*}'); None if any step is missing."""
    if el is None:
        return None
    xpath = _PATHS.get(path)
    if xpath is None:
        xpath = _PATHS[path] = "/".join(f"{{*}}{name}" for name in path)
    return el.find(xpath)


def _first(*elements: etree._Element | None) -> etree._Element | None:
    """First element that exists (lxml elements are falsy when childless, so ``a or b`` is wrong)."""
    return next((e for e in elements if e is not None), None)


def _text(el: etree._Element | None, *path: str) -> str | None:
    found = _child(el, *path) if path else el
    return clean(found.text) if found is not None and found.text is not None else None


def date_of(raw: str | None) -> dt.date | None:
    """The date of a cleaned ``<Dt>`` or ``<DtTm>`` text (its first ten characters); None when there is none."""
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw[:10])
    except ValueError:
        raise ParseError(f"date {raw!r} is not an ISO date (YYYY-MM-DD)", field="Dt") from None


def _date(el: etree._Element | None) -> dt.date | None:
    """``<Dt>`` or ``<DtTm>`` below ``el``."""
    return date_of(_text(el, "Dt") or _text(el, "DtTm"))


def _account(acct: etree._Element | None) -> str | None:
    return _text(acct, "Id", "IBAN") or _text(acct, "Id", "Othr", "Id")


_EVENT_TAGS = tuple(f"{{*}}{t}" for t in ("Acct", "Bal", "Ntry", *sorted(CONTAINERS)))


def _refuse_dtd(el: etree._Element | None, name: str) -> None:
    if el is None or el.getroottree().docinfo.doctype:
        raise ParseError("XML with a DOCTYPE/DTD is refused (possible XXE or entity bomb); "
                         "export the statement again without a DTD", path=name)


def _release(el: etree._Element) -> None:
    """Free a handled element and the (already handled) siblings before it: flat memory for any file size."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


def _signed(amount: Decimal, indicator: str | None, where: str, path: str, record: int) -> Decimal:
    if indicator == "CRDT":
        return amount
    if indicator == "DBIT":
        return -amount
    raise ParseError(f"CdtDbtInd {indicator!r} at {where} is neither CRDT nor DBIT", path=path, record=record,
                     field="CdtDbtInd")


BALANCE_KINDS = {"OPBD": "open", "PRCD": "open", "CLBD": "close"}  # Bal/Tp/CdOrPrtry/Cd -> which balance
Balances = dict[str, tuple[Decimal, dt.date | None, str]]


def balance(code: str | None, amount: str | None, indicator: str | None, date_raw: str | None, currency: str,
            line: int, name: str, record: int) -> tuple[str, tuple[Decimal, dt.date | None, str]] | Rejected | None:
    """One ``Bal``: ('open' or 'close', (signed amount, date, currency)); None when it is not an opening or closing
    balance or has no ``Amt`` (``amount`` None); a ``Rejected`` (as record ``record``) when a value is bad.
    ``amount`` is the ``Amt`` text as written, the others are cleaned texts (``date_raw``: ``Dt`` or ``DtTm``)."""
    if code not in BALANCE_KINDS or amount is None:
        return None
    try:
        value = _signed(parse_decimal(amount, path=name, record=record, field_name="Bal/Amt"), indicator,
                        f"line {line}", name, record)
        return BALANCE_KINDS[code], (value, date_of(date_raw), currency)
    except ParseError as exc:
        return Rejected(record, line, f"balance {code}: {exc.reason}")


def statement_balance(balances: Balances, record: int, account: str, statement_id: str | None,
                      entries_total: Decimal) -> Balance:
    """The statement's ``Balance`` record from its opening/closing balances (at least one of them)."""
    opening = balances.get("open")
    closing = balances.get("close")
    ref = closing or opening
    assert ref is not None
    return Balance(
        record_number=record, own_account=account, statement_id=statement_id,
        balance_date=(closing[1] if closing and closing[1] else ref[1]) or dt.date.min,
        opening=opening[0] if opening else None, closing=closing[0] if closing else None,
        currency=ref[2], entries_total=entries_total,
    )


def read(path: Path) -> Iterator[Record]:
    name = str(path)
    record = 0
    account: str | None = None
    statement_currency: str | None = None
    statement_id: str | None = None
    balances: Balances = {}
    entries_total = Decimal(0)
    with path.open("rb") as fh:
        prolog = fh.read(65536)
    if b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog:
        _refuse_dtd(None, name)
    try:
        context = etree.iterparse(
            str(path), events=("end",), tag=_EVENT_TAGS, resolve_entities=False, no_network=True,
            load_dtd=False, huge_tree=False, remove_comments=True, remove_pis=True,
        )
        checked = False
        for _, el in context:
            if not checked:
                _refuse_dtd(el, name)
                checked = True
            tag = _local(el.tag)
            if tag == "Acct":
                container = el.getparent()
                if _local(container.tag) in CONTAINERS:
                    account = _account(el)
                    statement_currency = _text(el, "Ccy")
                    statement_id = _text(container, "Id")  # Id precedes Acct in every version
            elif tag == "Bal":
                amt_el = _child(el, "Amt")
                dt_el = _child(el, "Dt")
                item = balance(
                    _text(el, "Tp", "CdOrPrtry", "Cd"), None if amt_el is None else amt_el.text or "",
                    _text(el, "CdtDbtInd"), _text(dt_el, "Dt") or _text(dt_el, "DtTm"),
                    (None if amt_el is None else amt_el.get("Ccy")) or statement_currency or "", el.sourceline,
                    name, record + 1)
                if isinstance(item, Rejected):
                    record += 1
                    yield item
                elif item is not None:
                    balances[item[0]] = item[1]
            elif tag == "Ntry":
                for rec in entry_records(el, name, record, account, statement_currency):
                    record = rec.record_number
                    if isinstance(rec, BankTxn) and rec.status == BOOKED:
                        # a split entry's parts add up to the entry amount, so summing parts is the entry total
                        entries_total += rec.amount
                    yield rec
                _release(el)
            elif tag in CONTAINERS:
                if account is None:
                    raise ParseError(f"statement at line {el.sourceline} has no Acct/Id: cannot tell whose "
                                     "account it is", path=name, field="Acct")
                if balances:
                    record += 1
                    yield statement_balance(balances, record, account, statement_id, entries_total)
                account = statement_currency = statement_id = None
                balances = {}
                entries_total = Decimal(0)
                _release(el)
        if not checked and getattr(context, "root", None) is not None:
            _refuse_dtd(context.root, name)
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"not well-formed XML ({exc.msg}); the file is damaged or truncated", path=name,
                         record=record or None) from None
    except OSError as exc:
        raise ParseError(f"cannot read the file ({exc})", path=name) from None


class _Paths:
    """The element descendants of one entry (or one ``TxDtls``) by their path of local names, in document order,
    from a single walk: ``first('RmtInf', 'Ustrd')`` is what ``find('{*}RmtInf/{*}Ustrd')`` finds, without
    an ElementPath evaluation per field (some thirty per entry). ``TxDtls`` subtrees are left out of an entry's
    walk: each split gets a walk of its own."""

    __slots__ = ("paths",)

    def __init__(self, el: etree._Element, skip: tuple[str, ...] = ()):
        self.paths: dict[tuple[str, ...], list[etree._Element]] = {}
        self._walk(el, (), skip)

    def _walk(self, el: etree._Element, path: tuple[str, ...], skip: tuple[str, ...]) -> None:
        for child in el:
            name = _local(child.tag)
            if not name:
                continue
            key = (*path, name)
            self.paths.setdefault(key, []).append(child)
            if len(child) and key != skip:
                self._walk(child, key, skip)

    def first(self, *path: str) -> etree._Element | None:
        found = self.paths.get(path)
        return found[0] if found else None

    def all(self, *path: str) -> list[etree._Element]:
        return self.paths.get(path, [])

    def text(self, *path: str) -> str | None:
        found = self.paths.get(path)
        return clean(found[0].text) if found and found[0].text is not None else None

    def date(self, name: str) -> dt.date | None:
        """``<Dt>`` or ``<DtTm>`` of the first ``name`` element (``_date``)."""
        return _date(self.first(name))


SPLITS = ("NtryDtls", "TxDtls")


def _sourceline(el: etree._Element) -> int:
    return el.sourceline


def entry_records(ntry: etree._Element, name: str, last_record: int, account: str | None,
                  statement_currency: str | None,
                  line_of: Callable[[etree._Element], int] = _sourceline) -> Iterator[Record]:
    """The records of one ``Ntry`` (numbered after ``last_record``). ``line_of`` gives the source line of the
    ``Ntry`` and of each ``TxDtls``: the fast path (``camt_bulk``) hands single entries, parsed on their own, to
    this function, with the lines they have in the file."""
    record = last_record
    line = line_of(ntry)
    entry = _Paths(ntry, skip=SPLITS)
    try:
        if account is None:
            raise ParseError("entry appears before the statement's Acct", path=name, record=record + 1, field="Acct")
        amt_el = entry.first("Amt")
        if amt_el is None:
            raise ParseError("entry has no Amt", path=name, record=record + 1, field="Amt")
        indicator = entry.text("CdtDbtInd")
        entry_amount = parse_decimal(amt_el.text or "", path=name, record=record + 1, field_name="Amt")
        currency = amt_el.get("Ccy") or statement_currency
        if not currency:
            raise ParseError("entry amount has no Ccy", path=name, record=record + 1, field="Amt/@Ccy")
        status = entry.text("Sts", "Cd") or entry.text("Sts") or BOOKED
        booking = entry.date("BookgDt") or entry.date("ValDt")
        if booking is None:
            raise ParseError("entry has neither BookgDt nor ValDt", path=name, record=record + 1, field="BookgDt")
        value_date = entry.date("ValDt")
        reversal = (entry.text("RvslInd") or "").lower() == "true"
        entry_ref = entry.text("AcctSvcrRef") or entry.text("NtryRef")
        details = entry.all(*SPLITS)
        if not details:
            signed = _signed(entry_amount, indicator, f"line {line}", name, record + 1)
    except ParseError as exc:
        yield Rejected(record + 1, line, exc.reason)
        return

    if not details:
        record += 1
        yield BankTxn(
            record_number=record, source_line=line, own_account=account, booking_date=booking,
            value_date=value_date, amount=signed, currency=currency, purpose=entry.text("AddtlNtryInf"),
            bank_reference=entry_ref, status=status, is_reversal=reversal,
        )
        return

    for index, tx in enumerate(details, start=1):
        record += 1
        try:
            t = _Paths(tx)
            tx_amt_el = _first(t.first("Amt"), t.first("AmtDtls", "TxAmt", "Amt"))
            if tx_amt_el is not None:
                amount = parse_decimal(tx_amt_el.text or "", path=name, record=record, field_name="TxDtls/Amt")
            elif len(details) == 1:
                amount = entry_amount
            else:
                raise ParseError(f"split entry: TxDtls {index} of {len(details)} has no amount", path=name,
                                 record=record, field="TxDtls/Amt")
            tx_indicator = t.text("CdtDbtInd") or indicator
            signed = _signed(amount, tx_indicator, f"line {line_of(tx)}", name, record)
            side, party_acct, agent = ("Dbtr", "DbtrAcct", "DbtrAgt") if signed >= 0 else ("Cdtr", "CdtrAcct", "CdtrAgt")
            # up to .07 the name is Dbtr/Nm; from .08 it is Dbtr/Pty/Nm
            party_name = t.text("RltdPties", side, "Nm") or t.text("RltdPties", side, "Pty", "Nm")
            org = _first(t.first("RltdPties", side, "Id", "OrgId"), t.first("RltdPties", side, "Pty", "Id", "OrgId"))
            purpose = " ".join(
                p for p in (
                    *(clean(u.text) for u in t.all("RmtInf", "Ustrd")),
                    t.text("RmtInf", "Strd", "CdtrRefInf", "Ref"),
                ) if p
            ) or t.text("AddtlTxInf") or entry.text("AddtlNtryInf")
            e2e = t.text("Refs", "EndToEndId")
            yield BankTxn(
                record_number=record, source_line=line_of(tx), own_account=account,
                booking_date=booking,
                value_date=value_date, amount=signed, currency=(tx_amt_el.get("Ccy") if tx_amt_el is not None
                                                                 else None) or currency,
                counterparty_name=party_name, counterparty_tax_id=_text(org, "Othr", "Id"),
                counterparty_account=(t.text("RltdPties", party_acct, "Id", "IBAN")
                                      or t.text("RltdPties", party_acct, "Id", "Othr", "Id")),
                counterparty_bic=(t.text("RltdAgts", agent, "FinInstnId", "BICFI")
                                  or t.text("RltdAgts", agent, "FinInstnId", "BIC")),
                purpose=purpose, bank_reference=t.text("Refs", "AcctSvcrRef") or (
                    f"{entry_ref}/{index}" if entry_ref and len(details) > 1 else entry_ref),
                end_to_end_id=None if e2e == NOT_PROVIDED else e2e, status=status, is_reversal=reversal,
            )
        except ParseError as exc:
            yield Rejected(record, line_of(tx), exc.reason)


def load_bulk(con, path: Path, *, file_hash: str, source_file: str, run_id: str, scratch: Path) -> BulkResult:
    """The fast path used by ingestion: a columnar tokenizer over the bytes (see ``sources/camt_bulk.py``)."""
    from sources import camt_bulk

    loaded, quarantined, encoding = camt_bulk.load(con, path, file_hash=file_hash, source_file=source_file,
                                                   run_id=run_id)
    return BulkResult(loaded, quarantined, encoding)
