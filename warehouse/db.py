"""The embedded DuckDB warehouse at ``HOME/warehouse.duckdb``: connecting, schema, the HOME lock.

DuckDB allows one writing process per file, so every pipeline step opens, uses and closes its own connection,
and a run holds an exclusive lock on HOME so a second run exits clearly instead of fighting over the file.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl
import pyarrow.parquet as pq

from clientbase.errors import LockedError
from sources import crm

if TYPE_CHECKING:
    from clientbase.config import Settings


def _sql(name: str) -> str:
    return resources.files("warehouse").joinpath("sql", name).read_text(encoding="utf-8")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """For DDL that cannot take bound parameters (view definitions over file paths)."""
    return "'" + value.replace("'", "''") + "'"


def crm_table_ddl() -> list[str]:
    """raw.crm_<entity>: canonical columns as text (typed in staging), extra columns kept as JSON."""
    statements = []
    for entity in crm.ENTITIES:
        cols = ",\n    ".join(f"{quote_ident(c)} VARCHAR" for c in crm.columns(entity))
        statements.append(
            f"CREATE TABLE IF NOT EXISTS raw.{quote_ident('crm_' + entity)} (\n"
            "    file_hash VARCHAR NOT NULL, source_file VARCHAR NOT NULL, record_number INTEGER NOT NULL,\n"
            f"    {cols},\n    extra JSON\n)"
        )
    return statements


_WIDENED = [("raw", "statement_balance", "entries_total", "DECIMAL(38,5)")]  # (schema, table, column, type now)


@functools.cache
def schema_digest() -> str:
    """What ``ensure_schema`` would run, hashed: the version a warehouse's schema is at."""
    ddl = [_sql("schema.sql"), *crm_table_ddl(), repr(_WIDENED)]
    return hashlib.sha256("\n".join(ddl).encode()).hexdigest()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create or upgrade the warehouse's tables; ``ops.schema_version`` remembers the DDL's digest, so a
    warehouse already at this code's schema costs one small query (~1.5 ms) instead of the DDL (~12 ms, paid at
    every connect: a small run connects ~30 times)."""
    try:
        if con.execute("SELECT version FROM ops.schema_version").fetchall() == [(schema_digest(),)]:
            return
    except duckdb.CatalogException:  # a new warehouse, or one from before the marker
        pass
    con.execute(_sql("schema.sql"))
    for schema, table, column, wanted in _WIDENED:  # warehouses created before a column was widened
        # the type a query binds the column to: ~1 ms, where a connection's first duckdb_columns() took ~30 ms
        target, name = f"{quote_ident(schema)}.{quote_ident(table)}", quote_ident(column)
        if str(con.sql(f"SELECT {name} FROM {target}").types[0]) != wanted:  # noqa: S608 - code constants
            con.execute(f"ALTER TABLE {target} ALTER COLUMN {name} TYPE {wanted}")
    for statement in crm_table_ddl():
        con.execute(statement)
    con.execute("CREATE OR REPLACE TABLE ops.schema_version AS SELECT ?::VARCHAR AS version", [schema_digest()])


@contextmanager
def connect(path: Path, *, read_only: bool = False,
            memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection whose relative file paths (the ``marts`` views) resolve against the database's folder.

    ``memory_limit`` (DuckDB's syntax: '40%', '8GB') caps the database's buffers; it is a setting of the
    database, not of the connection, so every connection of the process to that file shares it. It is SET after
    connecting rather than passed as a config: DuckDB refuses a second connection to an open file with another
    config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only,
                         config={"file_search_path": str(path.parent.absolute())})
    try:
        if memory_limit is not None:
            con.execute("SET memory_limit = ?", [memory_limit])
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


def open_warehouse(settings: Settings) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
    """The run's warehouse (``HOME/warehouse.duckdb``) with the configured DuckDB memory limit."""
    return connect(settings.warehouse_path, memory_limit=settings.execution.duckdb_memory_limit)


def query_polars(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    return pl.from_arrow(con.sql(sql, params=params).to_arrow_table())  # type: ignore[return-value]


def read_frames(path: Path, queries: dict[str, str | tuple[str, list]]) -> dict[str, pl.DataFrame]:
    """Run named queries on a short-lived connection and return polars frames.

    The connection lives only in this frame, so an error raised later by the caller (a failed gate) does not
    keep a DuckDB object alive through its traceback.
    """
    with connect(path) as con:
        return {name: query_polars(con, *((q,) if isinstance(q, str) else q)) for name, q in queries.items()}


def replace_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Materialise a polars frame as a warehouse table (staging is rebuilt whole by each run)."""
    schema, name = table.split(".")
    arrow = frame.to_arrow()
    con.register("_frame", arrow)
    try:
        # the table name is a code constant (staging.*), quoted as an identifier
        con.execute(f"CREATE OR REPLACE TABLE {quote_ident(schema)}.{quote_ident(name)} AS SELECT * FROM _frame")  # noqa: S608
    finally:
        con.unregister("_frame")


def export_parquet(con: duckdb.DuckDBPyConnection, table: str, path: Path,
                   file_hashes: list[str] | None = None) -> pl.LazyFrame:
    """A warehouse table as a parquet file (DuckDB streams it, in table order) and a lazy scan of it: polars then
    reads only the columns a plan uses, and never holds DuckDB's Arrow result next to its own copy. With
    ``file_hashes``, only the rows of those ingested files (a raw table's ``file_hash``)."""
    schema, name = table.split(".")
    where = ""
    if file_hashes is not None:  # bound into a temp table: COPY itself takes no parameters
        con.execute("CREATE OR REPLACE TEMP TABLE _export_files AS SELECT unnest(?::VARCHAR[]) AS file_hash",
                    [file_hashes])
        where = " WHERE file_hash IN (SELECT file_hash FROM _export_files)"
    # COPY takes no bound parameters: the path is a scratch file of ours quoted as a literal, the table a code
    # constant quoted as an identifier
    con.execute(f"COPY (SELECT * FROM {quote_ident(schema)}.{quote_ident(name)}{where}) "  # noqa: S608
                f"TO {quote_literal(str(path))} (FORMAT parquet, COMPRESSION snappy)")
    return pl.scan_parquet(path)


def write_slices(path: Path, slices: Iterator[pl.LazyFrame]) -> None:
    """Collect each frame in turn and append its rows to one parquet file, a slice being written while the next
    is computed: what is held is two slices, where a streaming sink of the whole plan holds what its parquet
    source decodes ahead of slower expressions (polars issue #28569: RSS follows the input's size, e.g. ~1.2 GB
    per 10M CRM invoices)."""
    writer, writing = None, None
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            for frame in slices:
                # large strings: pyarrow writes string views ~1.5x slower (1M wide bank rows: 1.56 -> 1.08 s)
                table = frame.collect().to_arrow(compat_level=pl.CompatLevel.oldest())
                if writing is not None:
                    writing.result()
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                writing = pool.submit(writer.write_table, table)
            if writing is not None:
                writing.result()
        finally:
            if writing is not None:
                wait([writing])  # also when a slice failed: the writer is closed after its last write
            if writer is not None:
                writer.close()


STAGING_DIR = "staging"
SCRATCH_DIR = ".work"  # HOME/.work/: a run's (or a stage's) intermediate files, removed when it ends


def staging_dir(home: Path, table: str) -> Path:
    """Where the rows of a staging table live: the parquet parts in ``HOME/staging/<name>/``."""
    return home / STAGING_DIR / table.split(".")[1]


def staging_files(home: Path, table: str) -> list[Path]:
    """The parts of a staging table in row order (their names sort by the last ingested file they cover)."""
    return sorted(staging_dir(home, table).glob("part-*.parquet"))


def put_staging(con: duckdb.DuckDBPyConnection, home: Path, table: str, path: Path, *, part: int,
                replace: bool) -> Path:
    """Make a parquet file (e.g. a polars ``sink_parquet``) a part of a staging table: all of its rows when
    ``replace`` (a rebuild), else rows appended after the existing parts (an increment).

    Staging is read mostly by polars, so its tables are parquet files behind ``staging.<name>`` views, not DuckDB
    tables: loading them into DuckDB's storage and exporting them again for the marts cost more than computing
    them. ``part`` names the file (``part-<part>.parquet``, zero-padded so names sort in row order): the highest
    ingest sequence number of the files the rows come from. The file is moved into place with ``os.replace`` (a
    reader holding an old part keeps reading it); the view reads the folder by a path relative to HOME, like the
    ``marts`` views, so the home can move. Warehouses from before held staging as tables, then as one file per
    table: those give way to the folder."""
    folder = staging_dir(home, table)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"part-{part:010d}.parquet"
    os.replace(path, target)
    if replace:
        for old in staging_files(home, table):
            if old != target:
                old.unlink()
    folder.with_suffix(".parquet").unlink(missing_ok=True)
    schema, name = table.split(".")
    (is_table,), = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
                               [schema, name]).fetchall()
    # DDL takes no bound parameters: the name is a code constant (staging.*) quoted as an identifier, the path
    # is ours, quoted as a literal
    if is_table:
        con.execute(f"DROP TABLE {quote_ident(schema)}.{quote_ident(name)}")
    con.execute(f"CREATE OR REPLACE VIEW {quote_ident(schema)}.{quote_ident(name)} AS "  # noqa: S608
                f"SELECT * FROM read_parquet({quote_literal(f'{STAGING_DIR}/{name}/*.parquet')})")
    return target


def mart_glob(name: str) -> str:
    """Where a view finds a mart: relative to HOME, so the home can move and the views follow the
    ``marts`` symlink to whatever version is published."""
    return f"marts/{name}/*.parquet"


def create_mart_views(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    for name in names:
        # DDL takes no bound parameters: the path is quoted as a literal, the name is a code constant
        con.execute(f"CREATE OR REPLACE VIEW marts.{quote_ident(name)} AS "  # noqa: S608
                    f"SELECT * FROM read_parquet({quote_literal(mart_glob(name))})")


@contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on HOME for the whole run."""
    home.mkdir(parents=True, exist_ok=True)
    lock_path = home / ".clientbase.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_path.read_text().strip() or "unknown"
            raise LockedError(f"{home}: another clientbase run (pid {holder}) is using this home; "
                              "wait for it to finish and run again") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)
