"""The parser benchmark's load ceiling (bench/parsers.py): DuckDB alone loading the reference rows into the raw table.

No timing here: the benchmark itself is run by hand (README, "Benchmarks"). This checks that the ceiling still
stores every reference row, typed, in the warehouse's current raw table, so its rate keeps meaning a full load.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

from bench import parsers
from warehouse.db import connect


def test_ceiling_stores_every_reference_row_typed(tmp_path: Path):
    ref = tmp_path / "reference.csv"
    parsers.write_generic(ref, 250)
    with ref.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    count, seconds, cpu = parsers.ceiling(ref, tmp_path)
    assert count == len(rows) == 250
    assert seconds > 0 and cpu >= 0
    with connect(tmp_path / "ceiling.duckdb") as con:
        stored = con.execute("SELECT record_number, own_account, booking_date::VARCHAR, amount, counterparty_name, "
                             "purpose, bank_reference FROM raw.bank_transaction ORDER BY record_number").fetchall()
    assert [r[0] for r in stored] == list(range(1, 251))
    assert [(r[1], r[2], r[3], r[4], r[5], r[6]) for r in stored] == [
        (r["account"], r["booking_date"], Decimal(r["amount"]), r["counterparty_name"], r["purpose"], r["reference"])
        for r in rows]
