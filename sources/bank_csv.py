"""Bank CSV and XLSX exports, described by YAML profiles (one per bank layout) in ``sources/profiles/``.

A profile fixes: the encoding(s) to try (strictly, in order), the delimiter, the header names of each
canonical field (a list joins several columns, e.g. three description columns into one purpose), the date
format, the decimal and thousands separators, and how the sign is expressed:

- ``amount`` alone: a signed amount;
- ``debit`` + ``credit``: two unsigned columns (one of them filled per row);
- ``amount`` + ``direction`` with ``direction_map`` (e.g. ``Af: debit``, ``Bij: credit``).

The header row is searched in the first ``header_search_lines`` lines, so variable preambles (account
details, period, balances) are fine; ``own_account_pattern`` takes the account from the preamble when the
rows do not carry it, and ``currency`` gives a fixed currency when no column does. ``skip_rows`` names rows
that are not transactions (opening/closing balance lines of Baltic exports).

The profile is chosen by matching the header row; a file that matches none is an error listing the closest
profiles and how to add one. CSV is decoded in Python (DuckDB's reader has no cp1250/cp1251/cp1257).
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from clientbase.errors import ParseError, UnknownFormatError
from sources.base import (
    BankTxn,
    BulkResult,
    FileInfo,
    Record,
    Rejected,
    clean,
    load_yaml_models,
    parse_date,
    parse_decimal,
)

NAME = "bank_csv"
KIND = "bank"
PROFILE_DIR = Path(__file__).with_name("profiles")
MAX_LINE_CHARS = 100_000

FIELDS = (
    "own_account", "booking_date", "value_date", "amount", "debit", "credit", "direction", "currency",
    "counterparty_name", "counterparty_name_when_debit", "counterparty_tax_id", "counterparty_account",
    "counterparty_account_when_debit", "counterparty_bic", "purpose", "bank_reference", "end_to_end_id", "status",
)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    encoding: tuple[str, ...] = ("utf-8-sig",)
    delimiter: str = ","
    header_search_lines: int = 30
    date_format: str = "%Y-%m-%d"
    decimal: str = "."
    thousands: str | None = None
    columns: dict[str, str | tuple[str, ...]]
    optional: tuple[str, ...] = ()
    direction_map: dict[str, str] = {}
    status_map: dict[str, str] = {}
    skip_rows: dict[str, tuple[str, ...]] = {}
    own_account_pattern: str | None = None
    currency: str | None = None

    @field_validator("encoding", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _complete(self) -> Profile:
        unknown = set(self.columns) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; known: {', '.join(FIELDS)}")
        if "booking_date" not in self.columns:
            raise ValueError("columns must map booking_date")
        if not ("amount" in self.columns or {"debit", "credit"} <= set(self.columns)):
            raise ValueError("columns must map amount, or debit and credit")
        if "direction" in self.columns and set(self.direction_map.values()) != {"debit", "credit"}:
            raise ValueError("a direction column needs direction_map values 'debit' and 'credit'")
        if "own_account" not in self.columns and not self.own_account_pattern:
            raise ValueError("map own_account or give own_account_pattern")
        if "currency" not in self.columns and not self.currency:
            raise ValueError("map currency or give a fixed currency")
        return self

    def headers(self, field_name: str) -> tuple[str, ...]:
        value = self.columns.get(field_name, ())
        return (value,) if isinstance(value, str) else value

    @property
    def required_headers(self) -> set[str]:
        return {h for f in self.columns if f not in self.optional for h in self.headers(f)}


@cache
def profiles() -> tuple[Profile, ...]:
    return load_yaml_models(PROFILE_DIR, Profile, "bank CSV profile")


@dataclass
class Layout:
    """A profile applied to one file: where the header is and which column holds what."""

    profile: Profile
    encoding: str
    header_line: int  # 0-based line index of the header
    header: list[str]
    preamble: list[str]

    def index(self, field_name: str) -> list[int]:
        return [self.header.index(h) for h in self.profile.headers(field_name) if h in self.header]


def _lines(head: bytes, encoding: str) -> list[str] | None:
    try:
        text = head.decode(encoding, errors="strict")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:
            return None
        text = head[: exc.start].decode(encoding)  # the head may end inside a multi-byte character
    return text.lstrip("\ufeff").splitlines()


def _cells(line: str, delimiter: str) -> list[str]:
    try:
        return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
    except (csv.Error, StopIteration):
        return []


def match_header_rows(rows: list[list[str]], profile: Profile) -> int | None:
    """Index of the first row holding every required header of the profile."""
    required = profile.required_headers
    for i, row in enumerate(rows[: profile.header_search_lines]):
        if required <= set(row):
            return i
    return None


def layout_for(head: bytes, name: str = "") -> Layout | None:
    """The most specific profile whose headers the CSV file has (ties between profiles are an error)."""
    matches: list[Layout] = []
    for profile in profiles():
        for encoding in profile.encoding:
            lines = _lines(head, encoding)
            if lines is None:
                continue
            rows = [_cells(line, profile.delimiter) for line in lines[: profile.header_search_lines]]
            found = match_header_rows(rows, profile)
            if found is not None:
                matches.append(Layout(profile, encoding, found, rows[found], lines[:found]))
                break
    return most_specific(matches, name)


def layout_for_rows(rows: list[list[str]], name: str = "") -> Layout | None:
    """The same choice for a spreadsheet's first rows (cells already decoded)."""
    matches = []
    for profile in profiles():
        found = match_header_rows(rows, profile)
        if found is not None:
            preamble = [profile.delimiter.join(row) for row in rows[:found]]
            matches.append(Layout(profile, "xlsx", found, rows[found], preamble))
    return most_specific(matches, name)


def most_specific(matches: list[Layout], name: str) -> Layout | None:
    if not matches:
        return None
    matches.sort(key=lambda m: len(m.profile.required_headers), reverse=True)
    best = matches[0]
    tied = [m.profile.name for m in matches if len(m.profile.required_headers) == len(best.profile.required_headers)]
    if len(tied) > 1:
        raise UnknownFormatError(f"the header matches several bank CSV profiles equally well ({', '.join(tied)}); "
                                 "make one of them more specific", path=name or None)
    return best


def sniff(head: bytes, filename: str) -> bool:
    return layout_for(head) is not None


def explain_no_match(rows: list[list[str]]) -> str:
    """Closest profiles by header overlap, for the 'unknown layout' error."""
    seen = {cell for row in rows for cell in row}
    scored = []
    for profile in profiles():
        missing = sorted(profile.required_headers - seen)
        ratio = difflib.SequenceMatcher(None, sorted(profile.required_headers), sorted(seen)).ratio()
        scored.append((-len(missing), ratio, profile.name, missing))
    scored.sort(reverse=True)
    closest = "; ".join(f"{name} (missing headers: {', '.join(missing[:4])})" for _, _, name, missing in scored[:3])
    return (f"no bank CSV profile matches this header. Closest: {closest}. To add a layout, copy "
            f"{PROFILE_DIR / 'generic_signed.yaml'} next to it under a new name and map your column headers")


def explain_bytes(head: bytes) -> str:
    lines = _lines(head, "utf-8") or head.decode("latin-1").splitlines()
    delimiter = max(",;\t|", key=lambda d: sum(line.count(d) for line in lines[:30]))
    return explain_no_match([_cells(line, delimiter) for line in lines[:30]])


def own_account_from_preamble(layout: Layout, name: str) -> str | None:
    pattern = layout.profile.own_account_pattern
    if pattern is None:
        return None
    for line in layout.preamble:
        found = re.search(pattern, line)
        if found:
            return found.group(1).replace(" ", "")
    raise ParseError(f"profile {layout.profile.name}: no line of the preamble matches own_account_pattern; "
                     "the export lacks the account number", path=name, field="own_account")


def layout_of(path: Path) -> Layout:
    """The profile layout of a file, or the 'no profile matches' error listing the closest ones."""
    with path.open("rb") as raw:
        head = raw.read(65536)
    layout = layout_for(head, str(path))
    if layout is None:
        raise UnknownFormatError(explain_bytes(head), path=str(path))
    return layout


def _encoding_error(layout: Layout, exc: UnicodeDecodeError, name: str) -> ParseError:
    return ParseError(f"bytes not valid in the profile's encoding {layout.encoding} ({exc.reason}); check the "
                      "export's encoding or the profile", path=name)


def read(path: Path) -> Iterator[Record]:
    name = str(path)
    layout = layout_of(path)
    profile = layout.profile
    own_account = own_account_from_preamble(layout, name)
    yield FileInfo(encoding=layout.encoding)
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding=layout.encoding, errors="strict", newline="")
        try:
            for _ in range(layout.header_line + 1):  # preamble + header
                text.readline(MAX_LINE_CHARS)
            rows = csv.reader(text, delimiter=profile.delimiter)
            yield from rows_to_records(rows, layout, name, own_account,
                                       line_of=lambda: rows.line_num + layout.header_line + 1)
        except UnicodeDecodeError as exc:
            raise _encoding_error(layout, exc, name) from None
        except csv.Error as exc:
            raise ParseError(f"malformed CSV ({exc})", path=name) from None


def rows_to_records(rows, layout: Layout, name: str, own_account: str | None, line_of) -> Iterator[Record]:
    """Turn data rows (lists of cells) into records; shared by the CSV and XLSX readers."""
    profile = layout.profile
    index = {f: layout.index(f) for f in profile.columns}
    skip = {layout.header.index(col): set(values) for col, values in profile.skip_rows.items()
            if col in layout.header}
    record = 0
    for row in rows:
        cells = ["" if c is None else str(c) for c in row]
        if not any(c.strip() for c in cells):
            continue
        if any(i < len(cells) and cells[i].strip() in values for i, values in skip.items()):
            continue
        record += 1
        line = line_of()
        try:
            yield _to_txn(cells, index, profile, name, record, line, own_account)
        except ParseError as exc:
            yield Rejected(record, line, exc.reason, raw=profile.delimiter.join(cells)[:2000])


def _to_txn(row: list[str], index: dict[str, list[int]], profile: Profile, name: str, record: int, line: int,
            own_account: str | None) -> BankTxn:
    def get(field_name: str) -> str | None:
        parts = [clean(row[i]) for i in index.get(field_name, []) if i < len(row)]
        return " ".join(p for p in parts if p) or None

    def money(field_name: str):
        value = get(field_name)
        return parse_decimal(value, path=name, record=record, field_name=field_name, decimal=profile.decimal,
                             thousands=profile.thousands) if value else None

    def date(field_name: str):
        value = get(field_name)
        return parse_date(value, profile.date_format, path=name, record=record, field_name=field_name) \
            if value else None

    if "debit" in profile.columns:
        debit, credit = money("debit"), money("credit")
        if (debit is None) == (credit is None):
            raise ParseError("exactly one of the debit and credit columns must be filled", path=name,
                             record=record, field="debit/credit")
        amount = -abs(debit) if debit is not None else abs(credit)
    else:
        amount = money("amount")
        if amount is None:
            raise ParseError("amount is empty", path=name, record=record, field="amount")
        if "direction" in profile.columns:
            mark = get("direction")
            side = profile.direction_map.get(mark or "")
            if side is None:
                raise ParseError(f"direction {mark!r} is not one of {sorted(profile.direction_map)}", path=name,
                                 record=record, field="direction")
            amount = -abs(amount) if side == "debit" else abs(amount)
    booking = date("booking_date")
    if booking is None:
        raise ParseError("booking date is empty", path=name, record=record, field="booking_date")
    account = get("own_account") or own_account
    currency = (get("currency") or profile.currency or "").upper()
    if not account or not currency:
        raise ParseError("own account or currency is empty", path=name, record=record,
                         field="own_account" if not account else "currency")
    status = "BOOK"
    status_text = get("status")
    if status_text is not None and profile.status_map:
        if status_text not in profile.status_map:
            raise ParseError(f"unknown status {status_text!r}; the profile knows {sorted(profile.status_map)}",
                             path=name, record=record, field="status")
        status = profile.status_map[status_text]
    outgoing = amount < 0
    party_name = (get("counterparty_name_when_debit") if outgoing and "counterparty_name_when_debit" in index
                  else get("counterparty_name"))
    party_account = (get("counterparty_account_when_debit")
                     if outgoing and "counterparty_account_when_debit" in index else get("counterparty_account"))
    return BankTxn(
        record_number=record, source_line=line, own_account=account.replace(" ", ""), booking_date=booking,
        value_date=date("value_date"), amount=amount, currency=currency,
        counterparty_name=party_name, counterparty_tax_id=get("counterparty_tax_id"),
        counterparty_account=(party_account or "").replace(" ", "") or None,
        counterparty_bic=get("counterparty_bic"), purpose=get("purpose"), bank_reference=get("bank_reference"),
        end_to_end_id=get("end_to_end_id"), status=status,
    )


def load_bulk(con, path: Path, *, file_hash: str, source_file: str, run_id: str, scratch: Path) -> BulkResult:
    """The fast path used by ingestion: DuckDB types the rows (see ``sources/bank_csv_bulk.py``)."""
    from sources import bank_csv_bulk

    layout = layout_of(path)
    try:
        loaded, quarantined = bank_csv_bulk.load(con, path, layout, file_hash=file_hash, source_file=source_file,
                                                 run_id=run_id, scratch=scratch)
    except UnicodeDecodeError as exc:
        raise _encoding_error(layout, exc, str(path)) from None
    return BulkResult(loaded, quarantined, "utf-8" if layout.encoding == "utf-8-sig" else layout.encoding)
