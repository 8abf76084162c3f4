"""CSV exports of the published marts, for spreadsheets.

A spreadsheet treats a cell that starts with ``=``, ``+``, ``-``, ``@`` (or a tab / carriage return) as a
formula: a counterparty named ``=HYPERLINK("http://evil", "Refund")`` in a bank statement would become a live
link or command in the analyst's Excel. Every text cell that starts like that is prefixed with a single
quote (OWASP's advice), which spreadsheets show as plain text; numbers and dates are written as they are.
The file is UTF-8 with a byte-order mark, so Excel reads umlauts and Cyrillic names right.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import polars as pl

from clientbase.errors import InboxError
from transforms.marts import MARTS
from warehouse.publish import read_mart

FORMULA_START = r"^[=+\-@\t\r]"


def neutralise_formulas(column: str) -> pl.Expr:
    """A text column with formula-like cells prefixed by a single quote."""
    return pl.when(pl.col(column).str.contains(FORMULA_START)).then(pl.lit("'") + pl.col(column)) \
        .otherwise(pl.col(column)).alias(column)


def safe_for_spreadsheets(frame: pl.DataFrame) -> pl.DataFrame:
    text = [c for c, t in frame.schema.items() if t == pl.String]
    return frame.with_columns(neutralise_formulas(c) for c in text)


def mart_module(name: str) -> ModuleType:
    by_name = {mart.NAME: mart for mart in MARTS}
    if name not in by_name:
        raise InboxError(f"unknown mart {name!r}; the marts are: {', '.join(sorted(by_name))}")
    return by_name[name]


def export_csv(marts_dir: Path, name: str, out: Path) -> Path:
    """Write the published mart ``name`` as CSV to ``out`` (replaced atomically)."""
    if not marts_dir.is_dir():
        raise InboxError(f"{marts_dir}: no published marts yet; run 'clientbase run' first")
    frame = safe_for_spreadsheets(read_mart(marts_dir, mart_module(name)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write("\ufeff".encode())
        frame.write_csv(fh)
    os.replace(tmp, out)
    return out
