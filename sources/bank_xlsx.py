"""Bank statements exported as Excel workbooks (.xlsx/.xls/.ods), read with python-calamine.

The same YAML profiles as the CSV reader decide which column holds what; the first sheet whose first rows
contain a profile's headers is read. Typed cells are turned into the profile's text conventions before the
shared row logic parses them: numbers are written with the profile's decimal separator (via ``repr``, so the
value shown in Excel is the value parsed, never a binary float expansion), dates with its date format.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zipfile
from collections.abc import Iterator
from pathlib import Path

from clientbase.errors import ParseError, UnknownFormatError
from sources import bank_csv
from sources.base import Record

NAME = "bank_xlsx"
KIND = "bank"
HEADER_ROWS = 30


def is_workbook(path_or_head: Path | bytes) -> bool:
    """True for an OOXML workbook (a ZIP holding xl/workbook.xml) or a legacy .xls (OLE2) file."""
    head = path_or_head if isinstance(path_or_head, bytes) else path_or_head.open("rb").read(8)
    if head.startswith(b"\xd0\xcf\x11\xe0"):  # OLE2 compound file: .xls
        return True
    if not head.startswith(b"PK\x03\x04"):
        return False
    if isinstance(path_or_head, bytes):
        return b"xl/" in path_or_head or b"[Content_Types].xml" in path_or_head
    try:
        with zipfile.ZipFile(path_or_head) as zf:
            return "xl/workbook.xml" in zf.namelist()
    except zipfile.BadZipFile:
        return False


def sniff(head: bytes, filename: str) -> bool:
    return is_workbook(head)


def _text(value: object, profile: bank_csv.Profile) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.strftime(profile.date_format)
    if isinstance(value, dt.date):
        return value.strftime(profile.date_format)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text.lower():
            text = format(value, "f")
        if text.endswith(".0"):
            text = text[:-2]
        return text.replace(".", profile.decimal)
    if isinstance(value, int):
        return str(value)
    return str(value).strip()


class _RowCounter:
    """Tracks the 1-based sheet row of the row being parsed, for quarantine and error messages."""

    def __init__(self, rows_before: int):
        self.row = rows_before

    def count(self, rows):
        for row in rows:
            self.row += 1
            yield row

    def line(self) -> int:
        return self.row


def read(path: Path) -> Iterator[Record]:
    from python_calamine import CalamineWorkbook

    name = str(path)
    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises its own error types for damaged files
        raise ParseError(f"not a readable spreadsheet ({type(exc).__name__}: {exc})", path=name) from None
    text_rows: list[list[str]] = []
    try:
        for sheet_name in workbook.sheet_names:
            sheet = workbook.get_sheet_by_name(sheet_name)
            rows = sheet.iter_rows()
            first = []
            for row in rows:
                first.append(row)
                if len(first) >= HEADER_ROWS:
                    break
            text_rows = [[str(c).strip() if c is not None else "" for c in row] for row in first]
            layout = bank_csv.layout_for_rows(text_rows, name)
            if layout is None:
                continue
            profile = layout.profile
            own_account = bank_csv.own_account_from_preamble(layout, name)
            counter = _RowCounter(layout.header_line + 1)
            data = counter.count(itertools.chain(first[layout.header_line + 1:], rows))
            yield from bank_csv.rows_to_records(([_text(c, profile) for c in row] for row in data), layout,
                                                f"{name} (sheet {sheet_name})", own_account, line_of=counter.line)
            return
    finally:
        workbook.close()
    raise UnknownFormatError("no sheet has the headers of a bank profile. " + bank_csv.explain_no_match(text_rows),
                             path=name)
