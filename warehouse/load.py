"""Loading parsed records into the raw layer, one file per transaction, in batches.

Each file is loaded all-or-nothing: its raw rows, its quarantined rows and its manifest entry commit together.
A file-level error (unreadable, unknown layout) rolls the file back and stops the run with a message naming it.
Several files may be parsed and loaded at once (``CommitOrder``); their transactions still commit one at a time,
in the order the files were discovered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path

import duckdb
import pyarrow as pa

from clientbase.errors import NotLoaded
from sources import crm
from sources.base import Balance, BankTxn, CrmRow, FileInfo, Rejected

BATCH_ROWS = 50_000
MONEY = pa.decimal128(23, 5)

_BANK_SCHEMA = pa.schema([
    ("file_hash", pa.string()), ("source_file", pa.string()), ("record_number", pa.int32()),
    ("source_line", pa.int32()), ("reader", pa.string()), ("own_account", pa.string()),
    ("booking_date", pa.date32()), ("value_date", pa.date32()), ("amount", MONEY), ("currency", pa.string()),
    ("counterparty_name", pa.string()), ("counterparty_tax_id", pa.string()),
    ("counterparty_account", pa.string()), ("counterparty_bic", pa.string()), ("purpose", pa.string()),
    ("bank_reference", pa.string()), ("end_to_end_id", pa.string()), ("status", pa.string()),
    ("is_reversal", pa.bool_()),
])
_BALANCE_SCHEMA = pa.schema([
    ("file_hash", pa.string()), ("source_file", pa.string()), ("record_number", pa.int32()),
    ("own_account", pa.string()), ("statement_id", pa.string()), ("balance_date", pa.date32()),
    ("opening", MONEY), ("closing", MONEY), ("currency", pa.string()),
    ("entries_total", pa.decimal128(38, 5)),  # a sum of amounts can need more digits than one amount
])
_QUARANTINE_SCHEMA = pa.schema([
    ("file_hash", pa.string()), ("source_file", pa.string()), ("record_number", pa.int32()),
    ("source_line", pa.int32()), ("reason", pa.string()), ("raw_record", pa.string()), ("run_id", pa.string()),
])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class FileStats:
    path: str
    sha256: str
    reader: str
    encoding: str | None = None
    records_in: int = 0
    rows_raw: int = 0
    rows_quarantined: int = 0


class _Buffer:
    """Rows for one target table, kept as tuples of the ``fields`` that vary and flushed as one Arrow batch,
    built column by column (the origin columns are constants of the file). Per-row dicts through
    ``Table.from_pylist`` were most of a Python reader's load step (``bench/parsers.py``: camt parse + load went
    from 12.9k to 18.8k records/s with columns from tuples)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, schema: pa.Schema, fields: tuple[str, ...],
                 constants: dict[str, object]):
        assert set(schema.names) == {*fields, *constants}, table
        self.con, self.table, self.schema, self.fields, self.constants = con, table, schema, fields, constants
        self.rows: list[tuple] = []

    def add(self, values: tuple) -> None:
        self.rows.append(values)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        n = len(self.rows)
        columns = dict(zip(self.fields, zip(*self.rows, strict=True), strict=True))
        batch = pa.table([pa.array(columns[f.name] if f.name in columns else [self.constants[f.name]] * n,
                                   type=f.type) for f in self.schema], schema=self.schema)
        self.con.register("_batch", batch)
        try:
            self.con.execute(f"INSERT INTO {self.table} BY NAME SELECT * FROM _batch")  # noqa: S608 - table is a constant
        finally:
            self.con.unregister("_batch")
        self.rows.clear()


_BANK_FIELDS = tuple(f.name for f in fields(BankTxn))
_BALANCE_FIELDS = tuple(f.name for f in fields(Balance))
_QUARANTINE_FIELDS = ("record_number", "source_line", "reason", "raw_record")
_bank_values = attrgetter(*_BANK_FIELDS)
_balance_values = attrgetter(*_BALANCE_FIELDS)


class CommitOrder:
    """Files loaded at the same time (one thread each) commit one after another, in the order they were discovered.

    That order is the ``ingest_seq`` the dedupe ranks files by (the earlier file wins) and the row order of the raw
    tables, so a run gives the same warehouse whether its files were loaded one at a time or several at once. A
    file that fails stops every later file of the run from committing (they roll back with ``NotLoaded``), as a
    run that loads files one after another stops at the first failure; earlier files still commit.

    The run holds the HOME lock, so nothing else adds files while it loads: the run's files get the sequence
    numbers after ``last_seq``, one per committed file. (Inside a file's transaction, ``max(ingest_seq)`` would
    be read from the snapshot its transaction began with, which misses files committed since.)
    """

    def __init__(self, last_seq: int):
        self._ready = threading.Condition()
        self._last_seq = last_seq
        self._next = 0  # the position whose turn it is to commit
        self._failed: tuple[int, str] | None = None  # (position, file) of the first file that failed

    def turn(self, position: int, name: str) -> Turn:
        """The turn of the file at ``position`` (0, 1, ... in discovery order), used as a context manager
        around everything the file's load does."""
        return Turn(self, position, name)

    def _wait(self, position: int) -> int:
        with self._ready:
            self._ready.wait_for(lambda: self._next == position
                                 or (self._failed is not None and self._failed[0] < position))
            if self._next != position:
                raise NotLoaded(f"not loaded: {self._failed[1]} failed before it; it is loaded by the next "
                                "run once that file is fixed or removed")
            return self._last_seq + 1

    def _finish(self, position: int, name: str, committed: bool) -> None:
        with self._ready:
            if committed and self._next == position:
                self._last_seq += 1
                self._next += 1
            elif not committed and (self._failed is None or position < self._failed[0]):
                self._failed = (position, name)
            self._ready.notify_all()


class Turn:
    """One file's place in a ``CommitOrder`` (see there)."""

    def __init__(self, order: CommitOrder, position: int, name: str):
        self.order, self.position, self.name = order, position, name
        self.waited = False

    def seq(self) -> int:
        """Wait until every earlier file of the run has committed; the file's ``ingest_seq``."""
        seq = self.order._wait(self.position)
        self.waited = True
        return seq

    def __enter__(self) -> Turn:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None and not self.waited:  # nothing committed: the turn still passes in order
                self.seq()
        except NotLoaded:
            kind = NotLoaded
            raise
        finally:
            self.order._finish(self.position, self.name, committed=kind is None)


@contextmanager
def _file_transaction(con: duckdb.DuckDBPyConnection, stats: FileStats, kind: str, size_bytes: int,
                      run_id: str, turn: Turn | None = None) -> Iterator[None]:
    """One file's rows and its manifest entry commit together, or nothing does; with a ``turn``, only once every
    earlier file of the run has committed."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        seq = turn.seq() if turn is not None else None
        con.execute(
            "INSERT INTO ops.ingested_file (file_hash, path, kind, reader, size_bytes, records_in, rows_raw, "
            "rows_quarantined, run_id, ingest_seq, ingested_at, encoding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "coalesce(?, (SELECT coalesce(max(ingest_seq), 0) + 1 FROM ops.ingested_file)), ?, ?)",
            [stats.sha256, stats.path, kind, stats.reader, size_bytes, stats.records_in, stats.rows_raw,
             stats.rows_quarantined, run_id, seq, dt.datetime.now(dt.UTC).replace(tzinfo=None), stats.encoding],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


class RecordWriter:
    """Writes a reader's records for one file into the raw and quarantine tables, in Arrow batches.

    Used by ``ingest_records`` and by set-based loaders for the records they leave to the reference code
    (``sources/onec_bulk.py``), so both paths build rows the same way. Counts what it wrote.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, file_hash: str, source_file: str, reader: str,
                 run_id: str):
        self.con, self.reader, self.run_id = con, reader, run_id
        self.origin = {"file_hash": file_hash, "source_file": source_file}
        self.bank = _Buffer(con, "raw.bank_transaction", _BANK_SCHEMA, _BANK_FIELDS, {**self.origin, "reader": reader})
        self.balances = _Buffer(con, "raw.statement_balance", _BALANCE_SCHEMA, _BALANCE_FIELDS, self.origin)
        self.quarantine = _Buffer(con, "ops.quarantine", _QUARANTINE_SCHEMA, _QUARANTINE_FIELDS,
                                  {**self.origin, "run_id": run_id})
        self.crm: dict[str, _Buffer] = {}
        self.encoding: str | None = None
        self.rows_raw = 0
        self.rows_quarantined = 0

    def add(self, rec: object) -> None:
        if isinstance(rec, BankTxn):
            self.rows_raw += 1
            self.bank.add(_bank_values(rec))
        elif isinstance(rec, Balance):
            self.balances.add(_balance_values(rec))
        elif isinstance(rec, CrmRow):
            self.rows_raw += 1
            if rec.entity not in self.crm:
                cols = crm.columns(rec.entity)
                schema = pa.schema([("file_hash", pa.string()), ("source_file", pa.string()),
                                    ("record_number", pa.int32()), *((c, pa.string()) for c in cols),
                                    ("extra", pa.string())])
                self.crm[rec.entity] = _Buffer(self.con, f'raw."crm_{rec.entity}"', schema,
                                               ("record_number", *cols, "extra"), self.origin)
            buffer = self.crm[rec.entity]
            buffer.add((rec.record_number, *(rec.values.get(c) for c in buffer.fields[1:-1]),
                                      json.dumps(rec.extra, ensure_ascii=False) if rec.extra else None))
        elif isinstance(rec, FileInfo):
            self.encoding = "utf-8" if rec.encoding == "utf-8-sig" else rec.encoding
        elif isinstance(rec, Rejected):
            self.rows_quarantined += 1
            self.quarantine.add((rec.record_number, rec.source_line, rec.reason, rec.raw))
        else:  # pragma: no cover - a reader bug
            raise TypeError(f"reader {self.reader} yielded {type(rec).__name__}")

    def flush(self) -> None:
        for buffer in (self.bank, self.balances, self.quarantine, *self.crm.values()):
            buffer.flush()


@dataclass
class BulkState:
    """What a set-based fast path (``sources/*_bulk.py``) carries while it loads one file chunk by chunk: the file's
    name for messages, the connection, a ``RecordWriter`` for the records it hands to its reference code, the bound
    parameters of its own INSERTs, and its counters. Each fast path extends it with what its format needs."""

    name: str
    con: duckdb.DuckDBPyConnection
    writer: RecordWriter
    params: dict[str, object]
    line_base: int = 0  # line breaks before the current chunk
    record: int = 0  # the last record number given
    loaded: int = 0  # rows the fast path inserted itself (the writer counts its own)

    @classmethod
    def start(cls, con: duckdb.DuckDBPyConnection, path: Path, *, file_hash: str, source_file: str, run_id: str,
              reader: str, **state):
        return cls(name=str(path), con=con, **state,
                   writer=RecordWriter(con, file_hash=file_hash, source_file=source_file, reader=reader,
                                       run_id=run_id),
                   params={"file_hash": file_hash, "source_file": source_file, "reader": reader})


def ingest_records(
    con: duckdb.DuckDBPyConnection,
    records: Iterable[object],
    *,
    stats: FileStats,
    kind: str,
    size_bytes: int,
    run_id: str,
    turn: Turn | None = None,
) -> FileStats:
    """Write one file's records (streamed from a reader) and its manifest row in one transaction."""
    with _file_transaction(con, stats, kind, size_bytes, run_id, turn):
        writer = RecordWriter(con, file_hash=stats.sha256, source_file=stats.path, reader=stats.reader,
                              run_id=run_id)
        for rec in records:
            writer.add(rec)
            if isinstance(rec, FileInfo):
                stats.encoding = writer.encoding
        writer.flush()
        stats.rows_raw, stats.rows_quarantined = writer.rows_raw, writer.rows_quarantined
        stats.records_in = writer.rows_raw + writer.rows_quarantined
    return stats


def ingest_bulk(
    con: duckdb.DuckDBPyConnection,
    load: Callable[[duckdb.DuckDBPyConnection], object],
    *,
    stats: FileStats,
    kind: str,
    size_bytes: int,
    run_id: str,
    turn: Turn | None = None,
) -> FileStats:
    """Run a reader's set-based loader (it inserts raw and quarantine rows itself) in the file's transaction.

    ``load(con)`` returns an object with ``loaded``, ``quarantined`` and ``encoding``.
    """
    with _file_transaction(con, stats, kind, size_bytes, run_id, turn):
        result = load(con)
        stats.rows_raw = result.loaded
        stats.rows_quarantined = result.quarantined
        stats.records_in = result.loaded + result.quarantined
        stats.encoding = result.encoding
    return stats


def known_hashes(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT file_hash FROM ops.ingested_file").fetchall()}


def last_ingest_seq(con: duckdb.DuckDBPyConnection) -> int:
    (seq,), = con.execute("SELECT coalesce(max(ingest_seq), 0) FROM ops.ingested_file").fetchall()
    return int(seq)


# where an ingested file leaves rows (all keyed by file_hash); the manifest entry goes last
_FILE_TABLES = ("raw.bank_transaction", "raw.statement_balance", "ops.quarantine",
                *(f'raw."crm_{entity}"' for entity in crm.ENTITIES), "ops.ingested_file")


def retract_file(con: duckdb.DuckDBPyConnection, file_hash: str) -> None:
    """Take one ingested file out of the warehouse, in one transaction: its raw rows, balances, quarantined rows
    and manifest entry. Staging notices the missing file and rebuilds; the next run's marts leave it out."""
    con.execute("BEGIN")
    try:
        for table in _FILE_TABLES:  # code constants; the hash is bound
            con.execute(f"DELETE FROM {table} WHERE file_hash = ?", [file_hash])  # noqa: S608
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
