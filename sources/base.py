"""What every reader produces, and the contract between readers and the warehouse loader.

A reader is a module with ``NAME``, ``KIND`` ('bank' or 'crm'), ``sniff(head: bytes, filename: str) -> bool`` and
``read(path: Path) -> Iterator[Record]``. Readers stream: they yield one record at a time and never hold a file.
Money is ``Decimal`` (never float); dates are ``datetime.date``.

A record is one of:
- ``BankTxn``: one booked or pending movement on one of our accounts (raw layer, as parsed);
- ``Balance``: an opening/closing balance of a statement, for reconciliation;
- ``CrmRow``: one row of a CRM entity, canonical columns as strings plus the untouched extra columns;
- ``Rejected``: a record that could not be parsed; it goes to quarantine with the reason;
- ``FileInfo``: facts about the whole file (its text encoding), recorded in the manifest.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from clientbase.errors import ParseError

MAX_AMOUNT_SCALE = 5  # camt allows up to 5 decimals; raw stores DECIMAL(23,5)
MAX_AMOUNT_DIGITS = 18  # digits before the point that DECIMAL(23,5) holds (camt's own limit is 18 digits in all)


@dataclass(slots=True)
class BankTxn:
    record_number: int
    source_line: int | None
    own_account: str
    booking_date: dt.date
    amount: Decimal  # signed: + money in, - money out
    currency: str
    value_date: dt.date | None = None
    counterparty_name: str | None = None
    counterparty_tax_id: str | None = None
    counterparty_account: str | None = None
    counterparty_bic: str | None = None
    purpose: str | None = None
    bank_reference: str | None = None
    end_to_end_id: str | None = None
    status: str = "BOOK"  # BOOK | PDNG | INFO
    is_reversal: bool = False


@dataclass(slots=True)
class Balance:
    record_number: int
    own_account: str
    statement_id: str | None
    balance_date: dt.date
    opening: Decimal | None
    closing: Decimal | None
    currency: str
    entries_total: Decimal  # sum of the statement's booked entries, as parsed, for reconciliation


@dataclass(slots=True)
class CrmRow:
    entity: str
    record_number: int
    values: dict[str, str | None]
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class FileInfo:
    """Facts about the whole file a reader found out (yielded first, at most once)."""

    encoding: str | None = None


@dataclass(slots=True)
class Rejected:
    record_number: int
    source_line: int | None
    reason: str
    raw: str | None = None


@dataclass(slots=True)
class BulkResult:
    """What a set-based loader (``load_bulk``) reports: rows it loaded and quarantined, the encoding used."""

    loaded: int
    quarantined: int
    encoding: str


Record = BankTxn | Balance | CrmRow | Rejected | FileInfo


_PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)")


def parse_decimal(text: str, *, path: str, record: int, field_name: str, decimal: str = ".",
                  thousands: str | None = None) -> Decimal:
    """Parse a money amount exactly. ``"82 604,01"`` with decimal=',' thousands=' ' -> Decimal('82604.01')."""
    cleaned = text.strip().replace("\u00a0", " ").replace("\u202f", " ")
    if thousands:
        cleaned = cleaned.replace(thousands, "")
    if thousands != " ":
        cleaned = cleaned.replace(" ", "")
    if decimal != ".":
        if "." in cleaned and thousands != ".":
            raise ParseError(f"amount {text!r} has '.' but the layout's decimal separator is {decimal!r}",
                             path=path, record=record, field=field_name)
        cleaned = cleaned.replace(decimal, ".")
    # plain digits with an optional sign and point only: Decimal alone would also take '1e5', '1_000', 'NaN'
    # and non-ASCII digits, which no bank writes and the DuckDB fast paths reject too
    if not _PLAIN_NUMBER.fullmatch(cleaned):
        raise ParseError(f"amount {text!r} is not a number", path=path, record=record, field=field_name)
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ParseError(f"amount {text!r} is not a number", path=path, record=record, field=field_name) from None
    return exact_amount(value, path=path, record=record, field_name=field_name, text=text)


def exact_amount(value: Decimal, *, path: str, record: int | None, field_name: str, text: str | None = None) -> Decimal:
    """``value`` when the warehouse's ``DECIMAL(23, 5)`` holds it exactly (no rounding, ever); else a ParseError
    naming the amount as written (``text``) and the field."""
    exponent = value.as_tuple().exponent
    written = text if text is not None else str(value)
    if isinstance(exponent, int) and -exponent > MAX_AMOUNT_SCALE:
        raise ParseError(f"amount {written!r} has more than {MAX_AMOUNT_SCALE} decimals", path=path, record=record,
                         field=field_name)
    if value.is_finite() and value and value.adjusted() >= MAX_AMOUNT_DIGITS:
        raise ParseError(f"amount {written!r} has more than {MAX_AMOUNT_DIGITS} digits before the decimal point",
                         path=path, record=record, field=field_name)
    return value


def parse_date(text: str, fmt: str, *, path: str, record: int, field_name: str) -> dt.date:
    try:
        return dt.datetime.strptime(text.strip(), fmt).date()
    except ValueError:
        raise ParseError(f"date {text!r} does not match the format {fmt!r}", path=path, record=record,
                         field=field_name) from None


def load_yaml_models(folder, model, what: str) -> tuple:
    """Every ``*.yaml`` in ``folder`` validated as ``model`` (profiles, presets); a bad file names itself."""
    import yaml
    from pydantic import ValidationError

    loaded = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            loaded.append(model(**yaml.safe_load(path.read_text(encoding="utf-8"))))
        except (ValidationError, TypeError, yaml.YAMLError) as exc:
            raise ParseError(f"{what} is invalid: {exc}".replace("\n", " "), path=str(path)) from None
    return tuple(loaded)


def clean(text: str | None) -> str | None:
    """Collapse whitespace; empty -> None."""
    if text is None:
        return None
    folded = " ".join(text.split())
    return folded or None
