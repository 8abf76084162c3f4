"""Bank CSV exports, described by YAML profiles (one per bank layout) in ``sources/profiles/``.

A profile fixes encoding, delimiter, preamble lines, the header names of each canonical field, date format and
number separators. The profile is chosen by matching the file's header row against every profile's required
headers; a file that matches none is an error that lists the closest profiles and how to add one.
The file is decoded in Python (DuckDB's CSV reader has no cp1251/cp1250/cp1252) and read row by row.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from clientbase.errors import ParseError, UnknownFormatError
from sources.base import BankTxn, Record, Rejected, clean, parse_date, parse_decimal

NAME = "bank_csv"
KIND = "bank"
PROFILE_DIR = Path(__file__).with_name("profiles")
MAX_LINE_CHARS = 100_000

_REQUIRED_FIELDS = ("own_account", "booking_date", "amount", "currency")
_FIELDS = (
    "own_account", "booking_date", "value_date", "amount", "currency", "counterparty_name", "counterparty_tax_id",
    "counterparty_account", "counterparty_bic", "purpose", "bank_reference", "end_to_end_id", "status",
)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    encoding: str = "utf-8"
    delimiter: str = ","
    preamble_lines: int = 0
    date_format: str = "%Y-%m-%d"
    decimal: str = "."
    thousands: str | None = None
    columns: dict[str, str]
    optional: tuple[str, ...] = ()
    status_map: dict[str, str] = {}

    @property
    def required_headers(self) -> set[str]:
        return {h for f, h in self.columns.items() if f not in self.optional}


@cache
def profiles() -> tuple[Profile, ...]:
    loaded = []
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        try:
            profile = Profile(**yaml.safe_load(path.read_text(encoding="utf-8")))
        except (ValidationError, TypeError, yaml.YAMLError) as exc:
            raise ParseError(f"bank CSV profile is invalid: {exc}".replace("\n", " "), path=str(path)) from None
        unknown = set(profile.columns) - set(_FIELDS)
        missing = set(_REQUIRED_FIELDS) - set(profile.columns)
        if unknown or missing:
            raise ParseError(f"profile maps unknown fields {sorted(unknown)} or lacks {sorted(missing)}",
                             path=str(path))
        loaded.append(profile)
    return tuple(loaded)


@dataclass
class _Match:
    profile: Profile
    header: list[str]
    index: dict[str, int] = field(default_factory=dict)


def _header_row(head: bytes, profile: Profile) -> list[str] | None:
    try:
        text = head.decode(profile.encoding, errors="strict")
    except UnicodeDecodeError:
        # the head may end inside a multi-byte character; retry without the last few bytes
        try:
            text = head[:-4].decode(profile.encoding, errors="strict")
        except UnicodeDecodeError:
            return None
    lines = text.lstrip("\ufeff").splitlines()
    if len(lines) <= profile.preamble_lines:
        return None
    try:
        return [h.strip() for h in next(csv.reader([lines[profile.preamble_lines]], delimiter=profile.delimiter))]
    except (csv.Error, StopIteration):
        return None


def _match(head: bytes) -> _Match | None:
    for profile in profiles():
        header = _header_row(head, profile)
        if header and profile.required_headers <= set(header):
            return _Match(profile, header, {f: header.index(h) for f, h in profile.columns.items() if h in header})
    return None


def sniff(head: bytes, filename: str) -> bool:
    return _match(head) is not None


def explain_no_match(head: bytes, filename: str) -> str:
    """Closest profiles by header overlap, for the 'unknown layout' error."""
    scored = []
    for profile in profiles():
        header = _header_row(head, profile) or []
        found = profile.required_headers & set(header)
        missing = sorted(profile.required_headers - set(header))
        ratio = difflib.SequenceMatcher(None, sorted(profile.required_headers), sorted(header)).ratio()
        scored.append((len(found), ratio, profile.name, missing))
    scored.sort(reverse=True)
    closest = "; ".join(f"{name} (missing headers: {', '.join(missing[:4])})" for _, _, name, missing in scored[:3])
    return (f"no bank CSV profile matches this header. Closest: {closest}. To add a layout, copy "
            f"{PROFILE_DIR / 'generic_signed.yaml'} next to it under a new name and map your column headers")


def read(path: Path) -> Iterator[Record]:
    name = str(path)
    with path.open("rb") as raw:
        head = raw.read(65536)
    match = _match(head)
    if match is None:
        raise UnknownFormatError(explain_no_match(head, path.name), path=name)
    profile, index = match.profile, match.index
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding=profile.encoding, errors="strict", newline="")
        try:
            for _ in range(profile.preamble_lines + 1):  # preamble + header
                text.readline(MAX_LINE_CHARS)
            rows = csv.reader(text, delimiter=profile.delimiter)
            record = 0
            for row in rows:
                record += 1
                line = rows.line_num + profile.preamble_lines + 1
                if not any(cell.strip() for cell in row):
                    record -= 1
                    continue
                try:
                    yield _to_txn(row, index, profile, name, record, line)
                except ParseError as exc:
                    yield Rejected(record, line, exc.reason, raw=profile.delimiter.join(row)[:2000])
        except UnicodeDecodeError as exc:
            raise ParseError(f"bytes not valid in the profile's encoding {profile.encoding} ({exc.reason}); "
                             "check the export's encoding or the profile", path=name) from None
        except csv.Error as exc:
            raise ParseError(f"malformed CSV ({exc})", path=name) from None


def _to_txn(row: list[str], index: dict[str, int], profile: Profile, name: str, record: int, line: int) -> BankTxn:
    def get(field_name: str) -> str | None:
        i = index.get(field_name)
        return clean(row[i]) if i is not None and i < len(row) else None

    for required in _REQUIRED_FIELDS:
        if get(required) is None:
            raise ParseError(f"required field is empty ({profile.columns[required]!r})", path=name, record=record,
                             field=required)
    value_date = get("value_date")
    status_text = get("status")
    status = "BOOK"
    if status_text is not None and profile.status_map:
        if status_text not in profile.status_map:
            raise ParseError(f"unknown status {status_text!r}; the profile knows {sorted(profile.status_map)}",
                             path=name, record=record, field="status")
        status = profile.status_map[status_text]
    return BankTxn(
        record_number=record, source_line=line, own_account=get("own_account") or "",
        booking_date=parse_date(get("booking_date") or "", profile.date_format, path=name, record=record,
                                field_name="booking_date"),
        value_date=parse_date(value_date, profile.date_format, path=name, record=record, field_name="value_date")
        if value_date else None,
        amount=parse_decimal(get("amount") or "", path=name, record=record, field_name="amount",
                             decimal=profile.decimal, thousands=profile.thousands),
        currency=(get("currency") or "").upper(),
        counterparty_name=get("counterparty_name"), counterparty_tax_id=get("counterparty_tax_id"),
        counterparty_account=(get("counterparty_account") or "").replace(" ", "") or None,
        counterparty_bic=get("counterparty_bic"), purpose=get("purpose"), bank_reference=get("bank_reference"),
        end_to_end_id=get("end_to_end_id"), status=status,
    )
