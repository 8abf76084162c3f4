"""ISO 20022 camt.053 / camt.052 / camt.054 (any version): bank-to-customer statements, reports, notifications.

Elements are matched on local names, so every schema version (.02, .04, .08, ...) parses the same way. The file is
read with ``lxml.etree.iterparse`` and each ``Ntry`` is released once handled: memory stays flat for any file size.
Security: no DTD is accepted (XXE / billion laughs), entities are never resolved, no network access.

One entry yields one record per ``TxDtls`` (split amounts) or one record when it has none (the entry's
``AddtlNtryInf`` is then the purpose). Sign comes from ``CdtDbtInd``; ``RvslInd`` is kept as ``is_reversal``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from lxml import etree

from clientbase.errors import ParseError
from sources.base import Balance, BankTxn, Record, Rejected, clean, parse_decimal

NAME = "camt"
KIND = "bank"

_CONTAINERS = {"Stmt", "Rpt", "Ntfctn"}  # camt.053 / camt.052 / camt.054


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


def _children(el: etree._Element | None, name: str) -> list[etree._Element]:
    return el.findall(f"{{*}}{name}") if el is not None else []


def _text(el: etree._Element | None, *path: str) -> str | None:
    found = _child(el, *path) if path else el
    return clean(found.text) if found is not None and found.text is not None else None


def _date(el: etree._Element | None) -> dt.date | None:
    """``<Dt>`` or ``<DtTm>`` below ``el``."""
    raw = _text(el, "Dt") or _text(el, "DtTm")
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw[:10])
    except ValueError:
        raise ParseError(f"date {raw!r} is not an ISO date (YYYY-MM-DD)", field="Dt") from None


def _account(acct: etree._Element | None) -> str | None:
    return _text(acct, "Id", "IBAN") or _text(acct, "Id", "Othr", "Id")


def _party_name(party: etree._Element | None) -> str | None:
    # up to .07 the name is Dbtr/Nm; from .08 it is Dbtr/Pty/Nm
    return _text(party, "Nm") or _text(party, "Pty", "Nm")


def _party_tax_id(party: etree._Element | None) -> str | None:
    org = _first(_child(party, "Id", "OrgId"), _child(party, "Pty", "Id", "OrgId"))
    return _text(org, "Othr", "Id")


_EVENT_TAGS = tuple(f"{{*}}{t}" for t in ("Acct", "Bal", "Ntry", *sorted(_CONTAINERS)))


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


def read(path: Path) -> Iterator[Record]:
    name = str(path)
    record = 0
    account: str | None = None
    statement_currency: str | None = None
    statement_id: str | None = None
    balances: dict[str, tuple[Decimal, dt.date | None, str]] = {}
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
                if _local(container.tag) in _CONTAINERS:
                    account = _account(el)
                    statement_currency = _text(el, "Ccy")
                    statement_id = _text(container, "Id")  # Id precedes Acct in every version
            elif tag == "Bal":
                code = _text(el, "Tp", "CdOrPrtry", "Cd")
                amt_el = _child(el, "Amt")
                if code in {"OPBD", "PRCD", "CLBD"} and amt_el is not None:
                    try:
                        value = _signed(
                            parse_decimal(amt_el.text or "", path=name, record=record + 1, field_name="Bal/Amt"),
                            _text(el, "CdtDbtInd"), f"line {el.sourceline}", name, record + 1)
                        balances["open" if code in {"OPBD", "PRCD"} else "close"] = (
                            value, _date(_child(el, "Dt")), amt_el.get("Ccy") or statement_currency or "")
                    except ParseError as exc:
                        record += 1
                        yield Rejected(record, el.sourceline, f"balance {code}: {exc.reason}")
            elif tag == "Ntry":
                for rec in _entry(el, name, record, account, statement_currency):
                    record = rec.record_number
                    if isinstance(rec, BankTxn) and rec.status == "BOOK":
                        # a split entry's parts add up to the entry amount, so summing parts is the entry total
                        entries_total += rec.amount
                    yield rec
                _release(el)
            elif tag in _CONTAINERS:
                if account is None:
                    raise ParseError(f"statement at line {el.sourceline} has no Acct/Id: cannot tell whose "
                                     "account it is", path=name, field="Acct")
                if balances:
                    opening = balances.get("open")
                    closing = balances.get("close")
                    record += 1
                    ref = closing or opening
                    assert ref is not None
                    yield Balance(
                        record_number=record, own_account=account, statement_id=statement_id,
                        balance_date=(closing[1] if closing and closing[1] else ref[1]) or dt.date.min,
                        opening=opening[0] if opening else None, closing=closing[0] if closing else None,
                        currency=ref[2], entries_total=entries_total,
                    )
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


def _entry(ntry: etree._Element, name: str, last_record: int, account: str | None,
           statement_currency: str | None) -> Iterator[Record]:
    record = last_record
    line = ntry.sourceline
    try:
        if account is None:
            raise ParseError("entry appears before the statement's Acct", path=name, record=record + 1, field="Acct")
        amt_el = _child(ntry, "Amt")
        if amt_el is None:
            raise ParseError("entry has no Amt", path=name, record=record + 1, field="Amt")
        indicator = _text(ntry, "CdtDbtInd")
        entry_amount = parse_decimal(amt_el.text or "", path=name, record=record + 1, field_name="Amt")
        currency = amt_el.get("Ccy") or statement_currency
        if not currency:
            raise ParseError("entry amount has no Ccy", path=name, record=record + 1, field="Amt/@Ccy")
        status = _text(ntry, "Sts", "Cd") or _text(ntry, "Sts") or "BOOK"
        booking = _date(_child(ntry, "BookgDt")) or _date(_child(ntry, "ValDt"))
        if booking is None:
            raise ParseError("entry has neither BookgDt nor ValDt", path=name, record=record + 1, field="BookgDt")
        value_date = _date(_child(ntry, "ValDt"))
        reversal = (_text(ntry, "RvslInd") or "").lower() == "true"
        entry_ref = _text(ntry, "AcctSvcrRef") or _text(ntry, "NtryRef")
        details = ntry.findall("{*}NtryDtls/{*}TxDtls")
    except ParseError as exc:
        yield Rejected(record + 1, line, exc.reason)
        return

    if not details:
        record += 1
        yield BankTxn(
            record_number=record, source_line=line, own_account=account, booking_date=booking,
            value_date=value_date, amount=_signed(entry_amount, indicator, f"line {line}", name, record),
            currency=currency, purpose=_text(ntry, "AddtlNtryInf"), bank_reference=entry_ref, status=status,
            is_reversal=reversal,
        )
        return

    for index, tx in enumerate(details, start=1):
        record += 1
        try:
            tx_amt_el = _first(_child(tx, "Amt"), _child(tx, "AmtDtls", "TxAmt", "Amt"))
            if tx_amt_el is not None:
                amount = parse_decimal(tx_amt_el.text or "", path=name, record=record, field_name="TxDtls/Amt")
            elif len(details) == 1:
                amount = entry_amount
            else:
                raise ParseError(f"split entry: TxDtls {index} of {len(details)} has no amount", path=name,
                                 record=record, field="TxDtls/Amt")
            tx_indicator = _text(tx, "CdtDbtInd") or indicator
            signed = _signed(amount, tx_indicator, f"line {tx.sourceline}", name, record)
            incoming = signed >= 0
            parties = _child(tx, "RltdPties")
            party = _child(parties, "Dbtr" if incoming else "Cdtr")
            party_acct = _child(parties, "DbtrAcct" if incoming else "CdtrAcct")
            agent = _child(tx, "RltdAgts", "DbtrAgt" if incoming else "CdtrAgt", "FinInstnId")
            purpose = " ".join(
                t for t in (
                    *(clean(u.text) for u in _children(_child(tx, "RmtInf"), "Ustrd")),
                    _text(tx, "RmtInf", "Strd", "CdtrRefInf", "Ref"),
                ) if t
            ) or _text(tx, "AddtlTxInf") or _text(ntry, "AddtlNtryInf")
            e2e = _text(tx, "Refs", "EndToEndId")
            yield BankTxn(
                record_number=record, source_line=tx.sourceline, own_account=account, booking_date=booking,
                value_date=value_date, amount=signed, currency=(tx_amt_el.get("Ccy") if tx_amt_el is not None
                                                                 else None) or currency,
                counterparty_name=_party_name(party), counterparty_tax_id=_party_tax_id(party),
                counterparty_account=_account(party_acct),
                counterparty_bic=_text(agent, "BICFI") or _text(agent, "BIC"),
                purpose=purpose, bank_reference=_text(tx, "Refs", "AcctSvcrRef") or (
                    f"{entry_ref}/{index}" if entry_ref and len(details) > 1 else entry_ref),
                end_to_end_id=None if e2e == "NOTPROVIDED" else e2e, status=status, is_reversal=reversal,
            )
        except ParseError as exc:
            yield Rejected(record, tx.sourceline, exc.reason)
