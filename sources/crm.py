"""CRM dumps: CSV (any delimiter, encoding detected), JSON / NDJSON, XLSX — mapped onto the canonical CRM schema.

One dump may be several files; each file is mapped by the first preset whose signature columns it has:
user mappings from the configuration first, then the vendor presets in ``sources/crm_presets/`` (HubSpot,
Salesforce, Pipedrive, amoCRM, Bitrix24), then the canonical schema itself (entity recognised by its
columns). A file that looks like a preset but lacks one of its required columns is an error naming the file,
the column and the preset. Values stay strings in raw (typing happens in staging); columns outside the mapping
are kept in ``extra``.

A preset column is a source column name, or ``{column, transform, map}`` with one of the transforms below
(milliseconds or seconds to minutes, Unix timestamps to ISO dates, first item of a ';'-joined id list, ...).
JSON records are flattened with dotted paths (``_embedded.companies.0.id``).

Ingestion loads CSV dumps through ``load_bulk`` (DuckDB, ``sources/crm_bulk.py``); ``read`` is the reference it
must match row for row, and loads what the fast path leaves to it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from clientbase.errors import ParseError, UnknownFormatError
from sources import text
from sources.base import BulkResult, CrmRow, FileInfo, Record, Rejected, clean, load_yaml_models

NAME = "crm"
KIND = "crm"
PRESET_DIR = Path(__file__).with_name("crm_presets")
MAX_LINE_CHARS = 100_000

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
        ("invoice_id", "client_id", "issue_date", "amount", "currency"),
        ("due_date", "cost", "margin", "status"),
    ),
    "marketing_spend": (("period", "spend_type", "amount", "currency"), ()),
}


def columns(entity: str) -> tuple[str, ...]:
    required, optional = ENTITIES[entity]
    return required + optional


# ---- value transforms (a closed set: presets are data, not code) --------------------------------------------

def _minutes(value: str, divisor: float) -> str:
    return f"{float(value.replace(',', '.')) / divisor:.2f}"


def _unix(value: str) -> dt.datetime:
    number = float(value)
    return dt.datetime.fromtimestamp(number / 1000 if number > 1e11 else number, dt.UTC)


def _iso_date(value: str) -> str:
    value = value.strip()
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%d.%m.%Y",
                "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%m/%d/%Y", "%m/%d/%Y %H:%M", "%Y/%m/%d"):
        try:
            return dt.datetime.strptime(value[:19] if "T" in value else value, fmt).date().isoformat()
        except ValueError:
            continue
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        raise ValueError(f"{value!r} is not a date") from None


def _iso_datetime(value: str) -> str:
    value = value.strip()
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None).isoformat(
            timespec="minutes")
    except ValueError:
        return _iso_date(value) + "T00:00"


TRANSFORMS = {
    "ms_to_minutes": lambda v: _minutes(v, 60_000),
    "seconds_to_minutes": lambda v: _minutes(v, 60),
    "hours_to_minutes": lambda v: _minutes(v, 1 / 60),
    "unix_to_date": lambda v: _unix(v).date().isoformat(),
    "unix_to_datetime": lambda v: _unix(v).replace(tzinfo=None).isoformat(timespec="minutes"),
    "date": _iso_date,
    "datetime": _iso_datetime,
    "first_id": lambda v: next((p.strip() for p in v.replace(",", ";").split(";") if p.strip()), ""),
    "lower": str.lower,
    "decimal_comma": lambda v: v.replace(" ", "").replace("\u00a0", "").replace(",", "."),
}


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str
    transform: str | None = None
    map: dict[str, str] | None = None
    default: str | None = None

    @field_validator("transform")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in TRANSFORMS:
            raise ValueError(f"unknown transform {value!r}; known: {', '.join(sorted(TRANSFORMS))}")
        return value


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    vendor: str
    entity: str
    signature: tuple[str, ...]
    columns: dict[str, str | ColumnSpec]
    aliases: dict[str, tuple[str, ...]] = {}  # source column -> other spellings (translated exports)
    constants: dict[str, str] = {}

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        if value not in ENTITIES:
            raise ValueError(f"unknown entity {value!r}; known: {', '.join(ENTITIES)}")
        return value

    def spec(self, canonical: str) -> ColumnSpec | None:
        raw = self.columns.get(canonical)
        if raw is None:
            return None
        return raw if isinstance(raw, ColumnSpec) else ColumnSpec(column=raw)

    def required_sources(self) -> list[tuple[str, str]]:
        """(canonical column, source column) for the entity's required columns."""
        required, _ = ENTITIES[self.entity]
        return [(c, self.spec(c).column) for c in required if self.spec(c) is not None]


def canonical_presets() -> list[Preset]:
    return [Preset(name=f"canonical_{entity}", vendor="canonical", entity=entity, signature=req,
                   columns={c: c for c in (*req, *opt)}) for entity, (req, opt) in ENTITIES.items()]


@cache
def vendor_presets() -> tuple[Preset, ...]:
    loaded = load_yaml_models(PRESET_DIR, Preset, "CRM preset")
    for preset in loaded:
        missing = [c for c in ENTITIES[preset.entity][0] if c not in preset.columns and c not in preset.constants]
        if missing:
            raise ParseError(f"CRM preset {preset.name} does not map required column(s) {missing}",
                             path=str(PRESET_DIR))
    return tuple(loaded)


# ---- tabular sources -----------------------------------------------------------------------------------------

@dataclass
class Table:
    header: list[str]
    rows: Iterator[tuple[int, dict[str, str | None]]]  # (record number, values by header)
    encoding: str | None


def _flatten(value: object, prefix: str = "") -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}{i}."))
        if prefix and not value:
            out[prefix[:-1]] = None
    else:
        out[prefix[:-1]] = None if value is None else str(value)
    return out


def _json_records(data: object) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("records", "data", "result", "items", "results"):
            if isinstance(data.get(key), list):
                return data[key]
        embedded = data.get("_embedded")
        if isinstance(embedded, dict):
            lists = [v for v in embedded.values() if isinstance(v, list)]
            if len(lists) == 1:
                return lists[0]
    raise ValueError("JSON is neither a list of records nor an object holding one")


def open_table(path: Path) -> Table:
    with path.open("rb") as fh:
        head = fh.read(text.SAMPLE_BYTES)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
        return _xlsx_table(path)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] in (b"[", b"{"):
        return _json_table(path, head)
    return _csv_table(path, head)


def _json_table(path: Path, head: bytes) -> Table:
    name = str(path)
    encoding = text.detect(head, name)
    try:
        raw = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:  # the sample decoded, a later byte does not
        raise ParseError(f"not valid {encoding.removesuffix('-sig')} at byte {exc.start} ({exc.reason}); "
                         "export the dump as UTF-8",
                         path=name) from None
    try:
        records = _json_records(json.loads(raw))
    except json.JSONDecodeError:
        try:  # NDJSON: one object per line
            records = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ParseError(f"not valid JSON or NDJSON (line {exc.lineno}: {exc.msg})", path=name) from None
    except ValueError as exc:
        raise ParseError(str(exc), path=name) from None
    flat = [_flatten(r) if isinstance(r, dict) else {"value": str(r)} for r in records]
    header: list[str] = []
    for record in flat:
        header.extend(k for k in record if k not in header)
    return Table(header, iter(enumerate(flat, start=1)), "utf-8" if encoding == "utf-8-sig" else encoding)


@dataclass
class CsvHead:
    encoding: str
    first: str  # the line the header was read from
    delimiter: str
    header: list[str]


def csv_head(path: Path, head: bytes) -> CsvHead:
    """Encoding, delimiter and header of a CSV dump from its first bytes (shared with ``crm_bulk``)."""
    encoding = text.detect(head, str(path))
    sample = head.decode(encoding, errors="ignore").lstrip("\ufeff")
    first = sample.splitlines()[0] if sample.strip() else ""
    try:
        delimiter = csv.Sniffer().sniff(first, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    header = [h.strip() for h in next(csv.reader([first], delimiter=delimiter), [])]
    return CsvHead(encoding, first, delimiter, header)


def _csv_table(path: Path, head: bytes) -> Table:
    name = str(path)
    found = csv_head(path, head)
    encoding, delimiter, header = found.encoding, found.delimiter, found.header

    def rows() -> Iterator[tuple[int, dict[str, str | None]]]:
        with path.open("rb") as raw:
            stream = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
            try:
                stream.readline(MAX_LINE_CHARS)
                reader = csv.reader(stream, delimiter=delimiter)
                record = 0
                for row in reader:
                    if not any(cell.strip() for cell in row):
                        continue
                    record += 1
                    if len(row) != len(header):
                        yield record, {"__error__": f"row has {len(row)} fields, the header has {len(header)}",
                                       "__raw__": delimiter.join(row)[:2000], "__line__": str(reader.line_num + 1)}
                        continue
                    yield record, dict(zip(header, row, strict=True))
            except UnicodeDecodeError as exc:
                raise ParseError(f"not valid {encoding} ({exc.reason}); export the dump as UTF-8", path=name) \
                    from None
            except csv.Error as exc:
                raise ParseError(f"malformed CSV ({exc})", path=name) from None

    return Table(header, rows(), "utf-8" if encoding == "utf-8-sig" else encoding)


def _xlsx_table(path: Path) -> Table:
    from python_calamine import CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0).to_python()
    except Exception as exc:  # calamine raises its own error types
        raise ParseError(f"not a readable spreadsheet ({type(exc).__name__}: {exc})", path=str(path)) from None
    if not sheet:
        raise ParseError("the first sheet is empty", path=str(path))
    header = [str(h).strip() for h in sheet[0]]

    def cell(value: object) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        return str(value)

    rows = ((i, {h: cell(v) for h, v in zip(header, row, strict=False)})
            for i, row in enumerate(sheet[1:], start=1) if any(v not in (None, "") for v in row))
    return Table(header, rows, None)


# ---- mapping ---------------------------------------------------------------------------------------------

def _lookup(header: list[str], preset: Preset, source: str) -> str | None:
    for spelling in (source, *preset.aliases.get(source, ())):
        if spelling in header:
            return spelling
        folded = [h for h in header if h.casefold() == spelling.casefold()]
        if folded:
            return folded[0]
    return None


def choose_preset(header: list[str], presets: list[Preset], name: str) -> Preset:
    """The first preset whose signature columns are all present; missing required columns are an error."""
    for preset in presets:
        if all(_lookup(header, preset, s) for s in preset.signature):
            missing = [(c, s) for c, s in preset.required_sources() if _lookup(header, preset, s) is None]
            if missing:
                canonical, source = missing[0]
                raise ParseError(f"looks like a {preset.vendor} export (preset {preset.name}) but lacks the column "
                                 f"{source!r} needed for {canonical}; export it with that column or add a "
                                 "mapping under crm.mappings in config.yaml", path=name, field=source)
            return preset
    near = sorted(((sum(_lookup(header, p, s) is not None for s in p.signature) / len(p.signature), p.name)
                   for p in presets if p.signature), reverse=True)[:3]
    hint = ", ".join(f"{n} ({share:.0%} of its signature columns)" for share, n in near if share > 0)
    raise UnknownFormatError(
        "the columns match no CRM preset" + (f"; closest: {hint}" if hint else "") + ". Name the columns as in the "
        "canonical CRM schema (see the data dictionary) or add a mapping under crm.mappings in config.yaml",
        path=name)


def _value(values: dict[str, str | None], header: list[str], preset: Preset, canonical: str) -> str | None:
    spec = preset.spec(canonical)
    if spec is None:
        return preset.constants.get(canonical)
    source = _lookup(header, preset, spec.column)
    raw = clean(values.get(source)) if source else None
    if raw is None:
        return spec.default
    if spec.map is not None:
        return spec.map.get(raw, raw)
    if spec.transform is not None:
        return clean(TRANSFORMS[spec.transform](raw))
    return raw


def sniff(head: bytes, filename: str) -> bool:
    return bool(head.strip())


def ranked_presets(user_presets: tuple[Preset, ...] = ()) -> list[Preset]:
    """User mappings first, then the most specific preset (longest signature) that fits."""
    return [*user_presets, *sorted([*vendor_presets(), *canonical_presets()], key=lambda p: -len(p.signature))]


def mapped_sources(header: list[str], preset: Preset) -> set[str | None]:
    """Header columns the preset maps (the rest go to ``extra``)."""
    return {_lookup(header, preset, s.column) for c in preset.columns if (s := preset.spec(c))}


def read(path: Path, user_presets: tuple[Preset, ...] = ()) -> Iterator[Record]:
    name = str(path)
    table = open_table(path)
    yield FileInfo(encoding=table.encoding)
    header = table.header
    preset = choose_preset(header, ranked_presets(user_presets), name)
    mapped = mapped_sources(header, preset)
    wanted = columns(preset.entity)
    required = ENTITIES[preset.entity][0]
    for record, values in table.rows:
        if "__error__" in values:
            yield Rejected(record, int(values["__line__"]), values["__error__"], raw=values["__raw__"])
            continue
        try:
            row = {c: _value(values, header, preset, c) for c in wanted}
        except (ValueError, OverflowError) as exc:
            yield Rejected(record, None, f"preset {preset.name}: {exc}", raw=json.dumps(values, ensure_ascii=False)[:2000])
            continue
        empty = [c for c in required if not row.get(c)]
        if empty:
            yield Rejected(record, None, f"required field(s) {', '.join(empty)} empty (preset {preset.name})",
                           raw=json.dumps(values, ensure_ascii=False)[:2000])
            continue
        extra = {k: v for k, v in values.items() if k not in mapped and v not in (None, "")}
        yield CrmRow(entity=preset.entity, record_number=record, values=row,
                     extra={**extra, "_preset": preset.name} if preset.vendor != "canonical" else extra)


def load_bulk(con, path: Path, *, file_hash: str, source_file: str, run_id: str, scratch: Path,
              user_presets: tuple[Preset, ...] = ()) -> BulkResult:
    """The fast path used by ingestion: DuckDB reads and maps CSV dumps (see ``sources/crm_bulk.py``); JSON,
    XLSX and CSV files it cannot reproduce exactly go through ``read``."""
    from sources import crm_bulk

    return crm_bulk.load(con, path, file_hash=file_hash, source_file=source_file, run_id=run_id, scratch=scratch,
                         user_presets=user_presets)
