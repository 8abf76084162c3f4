"""CRM dumps in the canonical CRM schema (CSV, UTF-8, any common delimiter).

One dump may be several files; each file's entity is recognised by its columns. Values stay strings in raw
(typing happens in staging); columns outside the canonical schema are kept in ``extra`` and ignored downstream.
Vendor presets (HubSpot, Salesforce, ...) map their exports onto these names before this point.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from clientbase.errors import ParseError, UnknownFormatError
from sources.base import CrmRow, Record, Rejected, clean

NAME = "crm_csv"
KIND = "crm"

# entity -> (required columns, optional columns). The order is the raw table's column order.
ENTITIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "clients": (
        ("client_id", "name"),
        ("tax_id", "accounts", "industry", "size_band", "region", "acquisition_channel", "created_date",
         "manager_id", "referred_by_client_id", "is_potential", "is_reference", "is_innovator", "is_demanding",
         "satisfaction", "share_of_wallet", "is_exclusive", "lead_stage"),
    ),
    "managers": (("manager_id", "name", "department"), ("hourly_cost", "currency")),
    "activities": (
        ("client_id", "manager_id", "activity_type", "started_at", "duration_minutes"),
        ("activity_id",),
    ),
    "tickets": (("ticket_id", "client_id", "opened_at", "minutes_spent"), ("closed_at", "manager_id")),
    "invoices": (
        ("invoice_id", "client_id", "issue_date", "due_date", "amount", "currency"),
        ("cost", "margin", "status"),
    ),
    "marketing_spend": (("period", "spend_type", "amount", "currency"), ()),
}
MAX_LINE_CHARS = 100_000


def columns(entity: str) -> tuple[str, ...]:
    required, optional = ENTITIES[entity]
    return required + optional


def _header(head: bytes) -> tuple[list[str], str] | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
        if text is None:
            return None
    lines = text.lstrip("\ufeff").splitlines()
    if not lines:
        return None
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t|")
    except csv.Error:
        return None
    return [h.strip().lower() for h in next(csv.reader([lines[0]], dialect))], dialect.delimiter


def recognise(header: list[str]) -> str | None:
    """The entity whose required columns are all present; the most specific one wins."""
    present = set(header)
    fits = [(len(req), entity) for entity, (req, _) in ENTITIES.items() if set(req) <= present]
    return max(fits)[1] if fits else None


def sniff(head: bytes, filename: str) -> bool:
    found = _header(head)
    return found is not None and recognise(found[0]) is not None


def read(path: Path) -> Iterator[Record]:
    name = str(path)
    with path.open("rb") as raw:
        found = _header(raw.read(65536))
    if found is None:
        raise UnknownFormatError("not a UTF-8 CSV with a header row", path=name)
    header, delimiter = found
    entity = recognise(header)
    if entity is None:
        raise UnknownFormatError("columns match no CRM entity of the canonical schema", path=name)
    known = set(columns(entity))
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
        try:
            text.readline(MAX_LINE_CHARS)
            rows = csv.reader(text, delimiter=delimiter)
            record = 0
            for row in rows:
                if not any(cell.strip() for cell in row):
                    continue
                record += 1
                if len(row) != len(header):
                    yield Rejected(record, rows.line_num + 1,
                                   f"row has {len(row)} fields, the header has {len(header)}",
                                   raw=delimiter.join(row)[:2000])
                    continue
                values = {h: clean(v) for h, v in zip(header, row, strict=True)}
                yield CrmRow(entity=entity, record_number=record,
                             values={c: values.get(c) for c in columns(entity)},
                             extra={h: v for h, v in values.items() if h not in known and v is not None})
        except UnicodeDecodeError as exc:
            raise ParseError(f"not UTF-8 ({exc.reason}); export the CRM dump as UTF-8", path=name) from None
        except csv.Error as exc:
            raise ParseError(f"malformed CSV ({exc})", path=name) from None
