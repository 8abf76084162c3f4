"""The pipeline's steps as plain functions (no Prefect): each does one I/O or checkpoint step.

``flows/pipeline.py`` wraps each in a task; tests call them directly. Every step opens and closes its own
DuckDB connection (one writer per file), and passes paths and small summaries, never big frames. The stage step
lives in ``flows/staging_step.py`` (staging is fingerprinted by the code computing it; re-exported here).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from clientbase.config import Settings
from clientbase.dictionary import catalog
from clientbase.errors import ClientbaseError, GateFailed, InboxError, NotLoaded, ParseError
from expectations import gate as gx_gate
from expectations import suites
from expectations.gate import SCRATCH as GATE_SCRATCH
from expectations.gate import GateOutcome, run_gate
from flows.staging_step import STAGE_STATE, STAGING_TABLES, StageStats, stage, write_json  # noqa: F401 - re-exported
from sources import archive, registry
from transforms import behaviour, clv, digests, economics
from transforms import metrics as m
from transforms.marts import (
    MARTS,
    abc_xyz_matrix,
    client_month,
    client_scorecard,
    cohort_retention,
    dependency,
    key_clients,
    ladder_transitions,
    manager_load,
    pareto_summary,
    phase_out_scenarios,
    retention_period,
    run_log,
    segments,
    target_portrait,
    unmatched_counterparties,
    unprofitable_audit,
    whale_curve,
)
from warehouse import publish
from warehouse.db import (
    SCRATCH_DIR,
    STAGING_DIR,
    create_mart_views,
    home_lock,
    open_warehouse,
    query_polars,
    quote_ident,
    quote_literal,
    replace_table,
    staging_files,
)
from warehouse.load import (
    CommitOrder,
    FileStats,
    Turn,
    file_sha256,
    ingest_bulk,
    ingest_records,
    known_hashes,
    last_ingest_seq,
    retract_file,
)

log = logging.getLogger("clientbase")

INBOX_KINDS = ("bank", "crm")


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class InboxFile:
    path: str  # absolute
    relative: str  # to the inbox: what run_log and quarantine show
    kind: str
    sha256: str
    size_bytes: int


# ---- ingest ----------------------------------------------------------------------------------------------

def inbox_files(inbox: Path, kinds: tuple[str, ...]) -> list[tuple[Path, str]]:
    """Every file under ``inbox/<kind>/`` (hidden files skipped), sorted; an empty inbox is an error."""
    if not inbox.is_dir():
        raise InboxError(f"{inbox}: inbox directory not found; create it with bank/ and crm/ subdirectories")
    files: list[tuple[Path, str]] = []
    for kind in kinds:
        folder = inbox / kind
        if folder.is_dir():
            files += [(p, kind) for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise InboxError(f"{inbox}: inbox is empty; put bank statements in {inbox / 'bank'} "
                         f"and CRM dumps in {inbox / 'crm'}")
    return files


def discover(settings: Settings) -> tuple[list[InboxFile], int]:
    """New files in ``inbox/bank`` and ``inbox/crm`` (by content hash), and how many were already ingested."""
    inbox = settings.inbox_dir
    files = inbox_files(inbox, INBOX_KINDS)
    with open_warehouse(settings) as con:
        seen = known_hashes(con)
    new: list[InboxFile] = []
    skipped = 0
    expanded = _expand_archives(settings, files)
    digests = _file_digests(settings, [path for path, _, _ in expanded])
    for (path, kind, relative), (digest, size) in zip(expanded, digests, strict=True):
        if digest in seen:
            skipped += 1
            continue
        seen.add(digest)  # the same content twice in one inbox is ingested once
        new.append(InboxFile(str(path), relative, kind, digest, size))
    return new, skipped


INBOX_INDEX = ".inbox_index.json"  # HOME/: the content hashes of the inbox files, with what stat said of each
_SETTLED_NS = 2_000_000_000  # a file changed this recently is hashed again at the next run (see _file_digests)


def _file_digests(settings: Settings, paths: list[Path]) -> list[tuple[str, int]]:
    """(sha256, size) of each file. A file that stat finds as it was when hashed before (same device, inode,
    size, modification and status-change time) keeps its hash from ``HOME/.inbox_index.json``; the others are
    hashed, ``ingest_workers`` at a time (hashlib releases the GIL). The index knows a file by its device and
    inode, not by its path, so an inbox of links, or one reached through another folder, reuses the hashes. The
    status-change time (ctime) is set by the kernel on every write and no tool can set it back, so a file
    rewritten with its old size and modification time (``cp -p``, ``touch -r``) is hashed again: git's index
    relies on the same. As in git, a file changed less than ``_SETTLED_NS`` before the run is not indexed: file
    systems keep time in ticks of a few milliseconds, and a write in the same tick as the stat would leave every
    time unchanged. So a night reads the files it has not seen instead of the whole inbox (10M bench: 2.2 GB,
    ~3 s)."""
    settled = time.time_ns() - _SETTLED_NS
    index_path = settings.home / INBOX_INDEX
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: every file is hashed
        index = {}
    stats = [_stat_key(path) for path in paths]  # (device, inode, size, mtime, ctime)
    ids = [f"{dev}:{inode}" for dev, inode, *_ in stats]
    todo = [n for n, (file_id, stat) in enumerate(zip(ids, stats, strict=True))
            if not isinstance(index.get(file_id), list) or index[file_id][:-1] != stat[2:]]
    with ThreadPoolExecutor(max_workers=settings.execution.ingest_workers) as pool:
        hashed = dict(zip(todo, pool.map(lambda n: _sha256(paths[n]), todo), strict=True))
    digests = [hashed[n] if n in hashed else index[file_id][-1] for n, file_id in enumerate(ids)]
    write_json(index_path, {file_id: [*stat[2:], digest] for file_id, stat, digest in zip(ids, stats, digests,
                                                                                          strict=True)
                            if stat[-1] < settled})
    return [(digest, stat[2]) for digest, stat in zip(digests, stats, strict=True)]


def _stat_key(path: Path) -> list[int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise InboxError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise InboxError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None


def _expand_archives(settings: Settings, files: list[tuple[Path, str]]) -> list[tuple[Path, str, str]]:
    """(path, kind, name shown to users) for every file, with ZIP archives replaced by their members."""
    out = []
    for path, kind in files:
        relative = str(path.relative_to(settings.inbox_dir))
        try:
            is_zip = archive.is_archive(path)
        except OSError as exc:
            raise InboxError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
        if not is_zip:
            out.append((path, kind, relative))
            continue
        target = settings.home / ".unpacked" / file_sha256(path)[:32]
        for member_path, member in archive.extract(path, target):
            out.append((member_path, kind, f"{relative}!{member}"))
    return out


def retract_files(settings: Settings, names: list[str]) -> list[tuple[str, str]]:
    """Take ingested files out of the warehouse (``warehouse.load.retract_file``), e.g. a statement that failed
    the raw gate, so that a corrected file can take its place; returns (path, file hash) of each.

    ``names``: as the pipeline shows them (relative to the inbox; an archive member ``archive.zip!member``),
    absolute paths in the inbox, or file hashes. Refused, before anything changes, for a name that matches no
    ingested file and while the inbox still holds the same content (the next run would load it again)."""
    with home_lock(settings.home), open_warehouse(settings) as con:
        manifest = con.execute("SELECT path, file_hash FROM ops.ingested_file ORDER BY ingest_seq").fetchall()
        chosen: list[tuple[str, str]] = []
        for name in names:
            given = Path(name)
            relative = (str(given.relative_to(settings.inbox_dir)) if given.is_absolute()
                        and given.is_relative_to(settings.inbox_dir) else name)
            found = [(path, h) for path, h in manifest if name == h or path == relative]
            if not found:
                raise InboxError(f"{name}: no ingested file has this path or hash; the table ops.ingested_file "
                                 f"of {settings.warehouse_path} lists them (path, file_hash)")
            for path, h in found:
                source = settings.inbox_dir / path.split("!", 1)[0]
                still = source.is_file() and ("!" in path or _sha256(source) == h)
                if still:
                    raise InboxError(f"{source} still holds {path}: correct, replace or move it first, or the next "
                                     "run loads it again")
            chosen += [entry for entry in found if entry not in chosen]
        for _, h in chosen:
            retract_file(con, h)
    return chosen


def commit_order(settings: Settings) -> CommitOrder:
    """The order in which the files of this run commit when several are loaded at once (``ingest_file``)."""
    with open_warehouse(settings) as con:
        return CommitOrder(last_ingest_seq(con))


def ingest_file(settings: Settings, item: InboxFile, run_id: str, turn: Turn | None = None) -> FileStats:
    """Detect the format, parse and load one file (all or nothing). With a ``turn`` (of ``commit_order``), other
    files may load at the same time: this one commits after every file discovered before it."""
    with turn or nullcontext():
        return _ingest_file(settings, item, run_id, turn)


def loaded_files(outcomes: list[FileStats | BaseException]) -> list[FileStats]:
    """The stats of files loaded at once, in discovery order; or the error of the first file that failed (the
    files after it were rolled back: ``NotLoaded``)."""
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if errors:
        raise next((e for e in errors if not isinstance(e, NotLoaded)), errors[0])
    return outcomes  # type: ignore[return-value]


def _ingest_file(settings: Settings, item: InboxFile, run_id: str, turn: Turn | None) -> FileStats:
    path = Path(item.path)
    shown = str(settings.inbox_dir / item.relative)  # archive members read as 'bank/x.zip!member.xml'
    error: ParseError | None = None
    try:
        reader = registry.detect(path, item.kind)
        stats = FileStats(path=item.relative, sha256=item.sha256, reader=reader.NAME)
        with open_warehouse(settings) as con:
            if hasattr(reader, "load_bulk"):  # set-based fast path (bank CSV, 1C, MT940, camt, CRM CSV)
                scratch = settings.home / ".tmp"
                scratch.mkdir(exist_ok=True)
                mappings = {"user_presets": settings.crm.mappings} if item.kind == "crm" else {}
                ingest_bulk(con, lambda c: reader.load_bulk(c, path, file_hash=item.sha256, source_file=item.relative,
                                                            run_id=run_id, scratch=scratch, **mappings),
                            stats=stats, kind=item.kind, size_bytes=item.size_bytes, run_id=run_id, turn=turn)
            else:
                records = (reader.read(path, user_presets=settings.crm.mappings) if item.kind == "crm"
                           else reader.read(path))
                ingest_records(con, records, stats=stats, kind=item.kind, size_bytes=item.size_bytes, run_id=run_id,
                               turn=turn)
    except ParseError as exc:
        where = shown if exc.path in (None, item.path) else exc.path.replace(item.path, shown)
        error = type(exc)(exc.reason, path=where, record=exc.record, field=exc.field)
    if error is not None:
        raise error  # outside the except block: the traceback holds no connection
    return stats


# ---- gates -----------------------------------------------------------------------------------------------

def _record_gate(settings: Settings, outcome: GateOutcome) -> GateOutcome:
    with open_warehouse(settings) as con:
        if outcome.results:
            frame = pl.DataFrame(outcome.results)
            con.register("_dq", frame.to_arrow())
            try:
                con.execute("INSERT INTO ops.dq_results BY NAME SELECT * FROM _dq")
            finally:
                con.unregister("_dq")
    if not outcome.passed:
        raise GateFailed(outcome.gate, outcome.failures, outcome.hint)
    return outcome


def _raw_gate_queries(files: str) -> dict[str, str]:
    """The raw gate's datasets, restricted to the files that ``files`` (a subquery of file hashes) selects."""
    return {
        "raw.bank_transaction": f"SELECT * FROM raw.bank_transaction WHERE file_hash IN {files}",  # noqa: S608
        # rows in = rows raw + rows quarantined, per file
        "file_accounting": f"""
            SELECT f.path, f.records_in, f.rows_raw, f.rows_quarantined,
                   f.records_in - f.rows_raw - f.rows_quarantined AS unaccounted
            FROM ops.ingested_file f WHERE f.file_hash IN {files}""",  # noqa: S608
        # opening + booked entries = closing, per statement with both balances
        "statement_reconciliation": f"""
            SELECT source_file, statement_id, own_account, balance_date, opening, closing, entries_total,
                   opening + entries_total - closing AS diff
            FROM raw.statement_balance
            WHERE file_hash IN {files} AND opening IS NOT NULL AND closing IS NOT NULL""",  # noqa: S608
    }


def gate_raw(settings: Settings, run_id: str) -> GateOutcome | None:
    """Validate, in DuckDB, every file that has not passed the raw gate: this run's and any that failed it before
    (older files passed their own gate when they arrived). A failed file fails every run until it is retracted
    (``clientbase retract``), so its rows never reach the marts. None when no file waits for the gate."""
    with open_warehouse(settings) as con:
        pending = [h for (h,) in con.execute("SELECT file_hash FROM ops.ingested_file "
                                             "WHERE raw_gate_passed IS NOT TRUE ORDER BY ingest_seq").fetchall()]
        if not pending:
            return None
        # the gate's own scratch catalog (a code constant) holds the hashes of the files to check
        gated = f"(SELECT file_hash FROM {GATE_SCRATCH}.gated_files)"  # noqa: S608
        outcome = run_gate("raw", run_id, _raw_gate_queries(gated), suites.raw_suite(settings.earliest_booking_date),
                           docs_dir=settings.data_docs_dir / "raw", con=con,
                           scratch={"gated_files": pl.DataFrame({"file_hash": pending}, schema={"file_hash": pl.String})})
        if outcome.passed:
            con.execute("UPDATE ops.ingested_file SET raw_gate_passed = true WHERE list_contains(?, file_hash)",
                        [pending])
        else:  # name the files, not only the check
            # the same datasets, the files as a bound list (the gate's scratch catalog is gone)
            failing = _raw_gate_queries("(SELECT unnest(?))")
            unbalanced = query_polars(con, f"SELECT * FROM ({failing['statement_reconciliation']}) "  # noqa: S608
                                           "WHERE diff != 0", [pending])
            unaccounted = query_polars(con, f"SELECT * FROM ({failing['file_accounting']}) "  # noqa: S608
                                            "WHERE unaccounted != 0", [pending])
            for row in unbalanced.iter_rows(named=True):
                outcome.failures.insert(0, (
                    f"{settings.inbox_dir / row['source_file']}: statement {row['statement_id'] or ''} of account "
                    f"{row['own_account']} does not reconcile: opening {row['opening']} + entries "
                    f"{row['entries_total']} != closing {row['closing']} (difference {row['diff']})"))
            for row in unaccounted.iter_rows(named=True):
                outcome.failures.insert(0, f"{settings.inbox_dir / row['path']}: {row['unaccounted']} records "
                                           "neither loaded nor quarantined")
            early = query_polars(con, "SELECT source_file, record_number, booking_date FROM raw.bank_transaction "
                                      "WHERE list_contains(?, file_hash) AND booking_date < ? "
                                      "ORDER BY source_file, record_number LIMIT 5",
                                 [pending, settings.earliest_booking_date])
            for row in early.iter_rows(named=True):
                outcome.failures.insert(0, f"{settings.inbox_dir / row['source_file']}, record "
                                           f"{row['record_number']}, booking date: {row['booking_date']} is before "
                                           f"earliest_booking_date ({settings.earliest_booking_date}); a mistyped "
                                           "year? (older history: lower earliest_booking_date in config.yaml)")
            outcome.hint = (f"Every run checks these files again until they pass: correct or remove the file in the "
                            f"inbox, then `clientbase retract --home {settings.home} <file>` takes its rows out of "
                            "the warehouse and the next run loads the corrected file.")
    return _record_gate(settings, outcome)


def gate_staged(settings: Settings, run_id: str, new_part: str | None = None,
                bank_gated: bool = False) -> GateOutcome:
    """Validate the staging tables. ``new_part`` (``StageStats.new_part``: this run appended the rows of that
    file and changed no staged row) limits the bank rows checked to that part's rows and any staged row sharing
    a transaction key with them: the checks are row by row but for the key's uniqueness, which needs no other
    rows, and the staged rows passed this gate (``stage`` passes a part only when the staging state says so:
    after a failure every run checks all of the rows until they pass). ``bank_gated`` (``StageStats.bank_gated``:
    no bank row changed since they passed) checks none of them."""
    bank_rows: str | pl.DataFrame = "SELECT * FROM staging.bank_transaction"
    if bank_gated:
        bank_rows = pl.scan_parquet(staging_files(settings.home, "staging.bank_transaction")).head(0).collect()
    elif new_part is not None:  # a few thousand rows: collected once (each check would run a query asset again)
        keys = pl.read_parquet(new_part, columns=["txn_key"])["txn_key"].implode()
        bank_rows = (pl.scan_parquet(staging_files(settings.home, "staging.bank_transaction"))
                     .filter(pl.col("txn_key").is_in(keys)).collect())
    with open_warehouse(settings) as con:
        outcome = run_gate("staged", run_id, {
            "staging.bank_transaction": bank_rows,
            "staging.client": "SELECT * FROM staging.client",
            "staging.client_match": "SELECT * FROM staging.client_match",
            "staging.invoice": "SELECT * FROM staging.invoice",
        }, suites.staged_suite(settings.reporting_currency), docs_dir=settings.data_docs_dir / "staged", con=con)
        if outcome.passed:
            _mark_staging_gated(settings)
        else:
            missing = query_polars(con, "SELECT currency, booking_date FROM staging.bank_transaction "
                                        "WHERE category IN ('client_payment', 'refund') AND amount_reporting IS NULL "
                                        "AND fx_rate IS NULL")
            too_large = query_polars(con, "SELECT source_file, record_number, amount, currency "  # noqa: S608
                                          f"FROM staging.bank_transaction WHERE {suites.UNCONVERTIBLE} "
                                          "ORDER BY source_file, record_number")
            invoices = query_polars(con, "SELECT invoice_id, currency, issue_date, fx_rate IS NULL AS no_rate "
                                         "FROM staging.invoice WHERE status = 'won' AND amount IS NULL")
    if not outcome.passed:
        for row in too_large.head(5).iter_rows(named=True):
            outcome.failures.insert(0, f"{row['source_file']}, record {row['record_number']}, amount: "
                                       f"{row['amount'].normalize():f} {row['currency']} is more than "
                                       f"{settings.reporting_currency} amounts hold ({m.MONEY_DIGITS} digits before "
                                       "the point) once converted; no bank amount is that large: "
                                       "check the file's amounts")
        for (currency,), rows in sorted(missing.group_by("currency"), key=lambda g: g[0]):
            days = sorted(rows["booking_date"].unique().to_list())
            shown = ", ".join(d.isoformat() for d in days[:5]) + (f" and {len(days) - 5} more days"
                                                                   if len(days) > 5 else "")
            outcome.failures.insert(0, f"no FX rate to {settings.reporting_currency} for {currency} on {shown} "
                                       f"({rows.height} client transactions); add them to "
                                       f"{settings.inbox_dir / settings.fx.rates_file}")
        unreadable = invoices.filter(~pl.col("no_rate"))
        if unreadable.height:
            outcome.failures.insert(0, f"{unreadable.height} won CRM invoice(s) have an amount that is empty, not a "
                                       f"number or more than {m.MONEY_DIGITS} digits before the "
                                       f"point (e.g. invoice {unreadable['invoice_id'][0]}); correct them in the CRM "
                                       "export (raw.crm_invoices has the values as read)")
        for (currency,), rows in sorted(invoices.filter("no_rate").group_by("currency", maintain_order=True),
                                        key=lambda g: str(g[0])):
            outcome.failures.insert(0, f"{rows.height} won CRM invoice(s) in {currency} have no FX rate to "
                                       f"{settings.reporting_currency} on their issue date (e.g. invoice "
                                       f"{rows['invoice_id'][0]} of {rows['issue_date'][0]}); add the rates to "
                                       f"{settings.inbox_dir / settings.fx.rates_file}")
    return _record_gate(settings, outcome)


def _mark_staging_gated(settings: Settings) -> None:
    """Record in the staging state that the staging on disk passed the staged gate (atomically)."""
    state_path = settings.home / STAGING_DIR / STAGE_STATE
    if not state_path.is_file():
        return
    write_json(state_path, {**json.loads(state_path.read_text(encoding="utf-8")), "gated": True})


# ---- stage: flows/staging_step.py (staging is fingerprinted by the code computing it, that module) --------

# ---- marts -----------------------------------------------------------------------------------------------

def month_range(start: str, end: str) -> tuple[dt.date, dt.date]:
    """'YYYY-MM' pair -> first days of both months; a bad value is a clear error."""
    def parse(value: str, name: str) -> dt.date:
        try:
            return dt.datetime.strptime(value, "%Y-%m").date()
        except ValueError:
            raise InboxError(f"--{name} {value!r}: expected a month as YYYY-MM, e.g. 2025-03") from None
    first, last = parse(start, "start"), parse(end, "end")
    if first > last:
        raise InboxError(f"--start {start} is after --end {end}")
    return first, last


FINGERPRINTS = "_fingerprints"  # <version dir>/_fingerprints/client_month.json: {file name: {group: fingerprint}}
# what a month's file is a function of besides its inputs and settings, and the checks it passed (the marts gate
# does not check a carried-over file again: gate_marts)
_MONTH_CODE = hashlib.sha256(b"".join(Path(mod.__file__).read_bytes() for mod in (
    client_month, m, suites, gx_gate))).hexdigest()
# <version dir>/_settlement/: the run's FIFO match, as invoice parts (parts/: one file per group of clients matched,
# those kept from the published state, those continued from it; the scorecard reads them too), the cent-days its
# paid parts were late per client and month (paid_late/, in the same files), the digest of each client's settlement
# inputs and its last payment day (clients.parquet) and what they were computed by (state.json)
SETTLEMENT_STATE = "_settlement"
_MATCH_CODE = hashlib.sha256(b"".join(Path(mod.__file__).read_bytes() for mod in (
    economics, m, digests))).hexdigest()


@dataclass(frozen=True)
class MonthJob:
    """One month of client_month to build: its input partition and what the published version has for it."""

    month: str  # ISO date of the first day
    # directory with the month's client_month.INPUTS as parquet files, of the groups of clients to build (None:
    # the whole month is carried over)
    inputs: str | None
    fingerprint: dict[str, str]  # {group of clients: fingerprint of its inputs (month_fingerprint)}
    previous_file: str | None  # the published version's file of this month, if any
    reused: tuple[int, ...] = ()  # groups whose rows are taken from previous_file (their fingerprints are its)
    hash_probe: int | None = None  # client_month.hash_probe() where the partitions were cut (with reused groups)


@dataclass(frozen=True)
class MonthPlan:
    version_dir: str
    scratch_dir: str
    jobs: list[MonthJob]
    kept: dict[str, dict]  # backfill: {file name: fingerprints} carried over unchanged outside its months
    # {ISO month: digest} of the booked client payments and refunds up to as-of (client_month's 'payments'
    # partitions, every month: None for a backfill, whose cut holds its months only)
    payment_digests: dict[str, list] | None = None


@dataclass(frozen=True)
class MonthResult:
    month: str
    file: str
    rows: int
    fingerprint: dict[str, str]
    computed: bool  # False: the published file was carried over (same fingerprints)
    worker: str  # host:pid of the process that ran the task
    groups: tuple[int, int] = (0, 0)  # (groups of clients built, groups whose published rows were taken over)


def scratch_dir(settings: Settings, run_id: str) -> Path:
    return settings.home / SCRATCH_DIR / run_id


def discard_scratch(settings: Settings, run_id: str) -> None:
    shutil.rmtree(scratch_dir(settings, run_id), ignore_errors=True)


def _month_file(month: str) -> str:
    return f"{client_month.PARTITION_BY}={month}.parquet"


def _read_fingerprints(version: Path | None, mart: str = client_month.NAME) -> dict:
    path = version / FINGERPRINTS / f"{mart}.json" if version is not None else None
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_fingerprints(version: Path, mart: str, fingerprints: dict) -> None:
    """What ``_read_fingerprints`` reads, in the version directory (published and pruned with it)."""
    (version / FINGERPRINTS).mkdir(exist_ok=True)
    (version / FINGERPRINTS / f"{mart}.json").write_text(
        json.dumps(dict(sorted(fingerprints.items())), indent=1) + "\n", encoding="utf-8")


def _mart_inputs(settings: Settings, as_of: dt.date) -> dict[str, pl.LazyFrame]:
    """The staging and ops tables the marts read, and the booked client payments and refunds up to as-of.

    Staging tables are scanned lazily from their parquet files (``HOME/staging/``), so each plan reads only
    the columns it uses and no whole table sits in memory (at 10M transactions the eager read peaked at
    17.6 GB)."""
    staged = {"staged": "staging.bank_transaction", "invoices": "staging.invoice",
              "activities": "staging.activity", "tickets": "staging.ticket", "match": "staging.client_match",
              "clients": "staging.client", "managers": "staging.manager"}
    frames = {name: pl.scan_parquet(staging_files(settings.home, table)) for name, table in staged.items()}
    with open_warehouse(settings) as con:
        frames["log"] = query_polars(con, "SELECT * FROM ops.run_log").lazy()
    booked = m.is_booked() & (pl.col("booking_date") <= as_of)
    frames["payments"] = frames["staged"].filter(m.is_client_payment() & booked)
    frames["refunds"] = frames["staged"].filter(m.is_refund() & booked)
    return frames


def prepare_marts(settings: Settings, run_id: str, as_of: dt.date,
                  months: tuple[dt.date, dt.date] | None = None) -> MonthPlan:
    """Create the unpublished version directory and cut client_month's inputs into month partitions.

    The pre-steps run once; each month gets one ``build_client_month`` task. Each month's inputs are
    fingerprinted per group of clients (``client_month.client_group``): a month whose groups all have the
    fingerprints the published file was computed from is carried over (its task links the file); in the others,
    the groups whose fingerprints changed get their inputs written to
    ``HOME/.work/<run id>/client_month/month=<date>/`` and the rest of the month's rows are taken from the
    published file. With ``months`` (backfill) only those months get a job (and are recomputed whole); the
    published files of the other months are carried over.
    """
    version_dir = publish.new_version_dir(settings.home, run_id)
    scratch = scratch_dir(settings, run_id) / client_month.NAME
    scratch.mkdir(parents=True)
    previous = publish.current_version_dir(settings.home)
    collected = _month_inputs(settings, as_of, previous, version_dir, months)
    cells = {name: client_month.partition_digests(frame) for name, frame in collected.items()
             if name not in client_month.MONTHLESS}
    groups: dict[dt.date, set[int]] = {}
    for name in cells:  # a month's clients are those with rows in these
        for month, group in cells[name]:
            groups.setdefault(month, set()).add(group)
    for name in client_month.MONTHLESS:  # the same digest in every month (a client's margin rate)
        by_group = client_month.group_digests(collected[name])
        cells[name] = {(month, g): by_group.get(g) for month, month_groups in groups.items() for g in month_groups}
    published = _read_fingerprints(previous)
    probe = client_month.hash_probe()  # what build_client_month checks before taking groups over
    jobs: list[MonthJob] = []
    dirty: list[tuple[dt.date, Path, list[int] | None]] = []  # (month, folder, its groups to build; None: all)
    for month in sorted(groups):
        name = _month_file(month.isoformat())
        fingerprints = {str(g): month_fingerprint(settings, {n: cells[n].get((month, g)) for n in client_month.INPUTS})
                        for g in sorted(groups[month])}
        old = previous / client_month.NAME / name if previous is not None else None
        old_file = str(old) if old is not None and old.is_file() else None
        before = published.get(name) if months is None and old_file is not None else None
        before = before if isinstance(before, dict) else {}  # a state from before the groups: nothing to reuse
        if before == fingerprints:  # carried over whole
            jobs.append(MonthJob(month=month.isoformat(), inputs=None, fingerprint=fingerprints,
                                 previous_file=old_file))
            continue
        reused = tuple(int(g) for g, fp in fingerprints.items() if before.get(g) == fp)
        folder = scratch / name.removesuffix(".parquet")
        dirty.append((month, folder, [g for g in sorted(groups[month]) if g not in reused] if reused else None))
        jobs.append(MonthJob(month=month.isoformat(), inputs=str(folder), fingerprint=fingerprints,
                             previous_file=old_file, reused=reused,
                             hash_probe=probe if reused else None))
    # only the months to compute get their input partition written (an increment: the groups of clients it
    # touched in the months it touched), one input at a time, each frame let go when its months are written (a
    # full run: the months of every frame at once held a second copy of them)
    for name in list(collected):
        frame = collected.pop(name)
        whole: Path | None = None  # a MONTHLESS input's file, written once for every month built whole
        for month, folder, todo in dirty:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{name}.parquet"
            if name in client_month.MONTHLESS and todo is None:
                if whole is None:
                    whole = scratch / f"{name}.parquet"
                    frame.write_parquet(whole, statistics=True)
                publish.link_or_copy(whole, target)
                continue
            part = client_month.month_part(name, frame, month)
            if todo is not None:
                part = part.filter(client_month.client_group().is_in(todo))
            part.write_parquet(target, statistics=True)
        del frame
    kept: dict[str, dict] = {}
    if months is not None:
        # file names are '<column>=<ISO date>.parquet', so they sort like the months they hold
        lo, hi = (_month_file(d.isoformat()) for d in months)
        publish.carry_over(version_dir, previous, client_month.NAME, lambda name: not lo <= name <= hi)
        kept = {p.name: published.get(p.name, {}) for p in (version_dir / client_month.NAME).glob("*.parquet")}
    return MonthPlan(version_dir=str(version_dir), scratch_dir=str(scratch.parent), jobs=jobs, kept=kept,
                     payment_digests=None if months is not None else {
                         month.isoformat(): list(digest)
                         for month, digest in client_month.month_digests(cells["payments"]).items()})


def _month_inputs(settings: Settings, as_of: dt.date, previous: Path | None, version_dir: Path,
                  months: tuple[dt.date, dt.date] | None) -> dict[str, pl.DataFrame]:
    """client_month's inputs of every month (of ``months`` for a backfill), collected. Its own function so what
    the cut reads is let go before the months are written."""
    eco = settings.economics
    frames = _mart_inputs(settings, as_of)
    # once per run, per client over its whole history: FIFO settlement, time costs, margin rates
    parts, paid_late = settle(frames["invoices"], frames["payments"], as_of=as_of, previous=previous,
                              version_dir=version_dir)
    settled = economics.settlement_costs(parts, as_of=as_of, cost_of_capital=eco.cost_of_capital,
                                         write_off_days=eco.write_off_days, paid_late=paid_late)
    costs = economics.time_costs(
        frames["activities"], frames["tickets"], frames["managers"], as_of=as_of,
        default_hourly_cost=eco.default_hourly_cost, support_hourly_cost=eco.support_hourly_cost)
    margins = economics.margin_rates(frames["invoices"], frames["clients"], default_margin=eco.default_margin,
                                     margin_by_industry=eco.margin_by_industry)
    cut = client_month.month_inputs(frames["staged"], as_of=as_of, costs=costs, settlement_costs=settled,
                                    margins=margins)
    if months is not None:
        cut = {name: frame if name in client_month.MONTHLESS else frame.filter(
            pl.col("month").is_between(months[0], months[1])) for name, frame in cut.items()}
    # together: collect_all runs the frames' plans side by side and computes shared parts once (10M transactions,
    # when the margins were repeated per client-month, which read the other three: 12.6-13.4 s -> 8.4-8.7 s)
    return dict(zip(cut, pl.collect_all(list(cut.values())), strict=True))


MATCH_GROUP_INVOICES = 2_000_000  # settle matches the clients in groups of about this many invoices
_SETTLEMENT_LAYOUT = 3  # clients.parquet holds each client's last payment day (2: not; before: one file each)


def settled_parts(version_dir: Path) -> pl.LazyFrame:
    """The version's FIFO match (``settle``'s parts), which the scorecard reads too."""
    return pl.scan_parquet(version_dir / SETTLEMENT_STATE / "parts" / "*.parquet")


def _client_groups(frame: pl.LazyFrame, folder: Path, groups: int) -> list[pl.LazyFrame]:
    """``frame`` cut into ``groups`` groups of clients by a hash of the id, written into ``folder`` in one
    streaming pass (one directory of files per group), as one scan per group (an empty frame for a group without
    rows). One group is ``frame`` itself, nothing written: a history of up to ``MATCH_GROUP_INVOICES`` invoices
    is held whole anyway (the 1M bench's 972k invoices, beside a test run: a night's settle ~1.0 -> ~0.7 s, a
    first run's ~3.0 -> ~2.8 s, medians of 4 interleaved)."""
    if groups == 1:
        return [frame]
    group = (pl.col("client_id").hash() % groups).alias("_group")
    frame.sink_parquet(pl.PartitionBy(folder, key=group, include_key=False, file_path_provider=lambda args: (
        f"{args.partition_keys['_group'][0]}/{args.index_in_partition}.parquet")), compression="lz4", mkdir=True)
    empty = pl.LazyFrame(schema=frame.collect_schema())
    return [pl.scan_parquet(folder / str(g) / "*.parquet") if (folder / str(g)).is_dir() else empty
            for g in range(groups)]


def settle(invoices: pl.LazyFrame, payments: pl.LazyFrame, *, as_of: dt.date, previous: Path | None,
           version_dir: Path) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """``economics.settlement_parts`` (which day paid which part of which invoice) and the paid parts'
    ``economics.paid_late_cent_days``, matching again only what changed.

    A client's FIFO match is a function of its won invoices issued up to as-of and its payments per day up to
    as-of alone (``economics.settlement_inputs``); the digest of those rows per client (``digests.by_key``) and
    its last payment day are kept with the version (``SETTLEMENT_STATE``). A client whose digests equal the
    published version's takes its parts, and the cent-days its paid parts were late per month, from the published
    state (if the code and the polars version that computed it are this run's). A client whose invoices are the
    same and whose payment days up to its last matched one are the same (their digest equals the published one)
    has only new days after them: it keeps its paid parts and cent-days, and its open remainders are matched
    against the new days (``economics.continue_match``). The others are matched whole. Neither result depends on
    as-of or on a setting (an open remainder's lateness does: the caller computes it every run), so the result
    has the rows of a whole match, in another order (nothing downstream reads an order), and cent-days of one
    client and month may come in several rows (``economics.settlement_costs`` sums them). On the 10M bench's
    one-day night the day's 6,143 payers held 3.2M of the 9.7M invoices: matched whole, they took ~5 s.

    The inputs are streamed into groups of clients of about ``MATCH_GROUP_INVOICES`` invoices (by a hash of the
    id) and each group is digested, matched and written on its own, so what is held is one group's inputs and
    match, whatever the history's size: the match's sorts and as-of joins hold about twice their input, and the
    whole inputs and parts held together made this the run's peak (100M transactions: 23.05 GB). Both results
    come back as scans of the files written into the version's state."""
    target = version_dir / SETTLEMENT_STATE
    shutil.rmtree(target, ignore_errors=True)  # files of an attempt before would join the globs below
    target.mkdir(parents=True)
    won, paid = economics.settlement_inputs(invoices, payments, as_of=as_of)
    groups = max(1, -(-invoices.select(pl.len()).collect().item() // MATCH_GROUP_INVOICES))  # won ones: fewer
    state = {"code": _MATCH_CODE, "polars": pl.__version__, "won": str(won.collect_schema()),
             "paid": str(paid.collect_schema()), "layout": _SETTLEMENT_LAYOUT}
    old = previous / SETTLEMENT_STATE if previous is not None else None
    reusable = (old is not None and (old / "state.json").is_file()
                and json.loads((old / "state.json").read_text(encoding="utf-8")) == state)
    old_clients = pl.read_parquet(old / "clients.parquet") if reusable else None
    scratch = target / "_inputs"
    won_groups = _client_groups(won, scratch / "won", groups)
    paid_groups = _client_groups(paid, scratch / "paid", groups)
    for folder in ("parts", "paid_late"):
        (target / folder).mkdir()
    clients, unchanged, continued, new_days, matched = [], [], [], [], 0
    for g, (won_g, paid_g) in enumerate(zip(won_groups, paid_groups, strict=True)):
        won_g, paid_g = pl.collect_all([won_g, paid_g])
        digest = _settlement_digests(won_g.lazy(), paid_g.lazy())
        fresh = digest.select("client_id")
        if old_clients is not None:
            same = digest.join(old_clients, on=digest.columns, how="semi", nulls_equal=True).select("client_id")
            fresh = fresh.join(same, on="client_id", how="anti")
            later = _later_days_only(fresh, digest, old_clients, paid_g)
            fresh = fresh.join(later, on="client_id", how="anti")
            unchanged.append(same)
            continued.append(later.select("client_id"))
            new_days.append(paid_g.join(later, on="client_id").filter(pl.col("booking_date") > pl.col("_last_paid"))
                            .drop("_last_paid"))
            won_g, paid_g = won_g.join(fresh, on="client_id", how="semi"), paid_g.join(fresh, on="client_id", how="semi")
        parts = economics.match_invoices(won_g.lazy(), paid_g.lazy()).collect()
        del won_g, paid_g
        _write_parts(target, str(g), parts)
        clients.append(digest)
        matched += fresh.height
        del parts
    shutil.rmtree(scratch, ignore_errors=True)  # no folder when neither input has a row
    clients = pl.concat(clients)
    went_on = 0
    if old_clients is not None:
        went_on_ids = pl.concat(continued)["client_id"]
        went_on = went_on_ids.len()
        remainder = pl.col("final") & pl.col("paid_date").is_null()
        if went_on:
            _write_parts(target, "continued", economics.continue_match(
                pl.scan_parquet(old / "parts" / "*.parquet").filter(
                    pl.col("client_id").is_in(went_on_ids.implode()) & remainder),
                pl.concat(new_days).lazy()).collect())
        # the clients whose digests did not change keep their parts and cent-days; those whose match went on keep
        # their paid parts and cent-days
        stale = old_clients.select("client_id").join(pl.concat([*unchanged, *continued]), on="client_id", how="anti")
        kept = ~pl.col("client_id").is_in(stale["client_id"].implode())
        kept_parts = kept & ~(pl.col("client_id").is_in(went_on_ids.implode()) & remainder)
        for folder, keep in (("parts", kept_parts), ("paid_late", kept)):
            pl.scan_parquet(old / folder / "*.parquet").filter(keep).sink_parquet(
                target / folder / "kept.parquet", compression="lz4")
    log.info("settlement: %d of %d clients matched (%d of them from their last matched payment day on)",
             matched + went_on, clients.height, went_on)
    clients.write_parquet(target / "clients.parquet")
    (target / "state.json").write_text(json.dumps(state, sort_keys=True) + "\n", encoding="utf-8")
    return settled_parts(version_dir), pl.scan_parquet(target / "paid_late" / "*.parquet")


def _settlement_digests(won: pl.LazyFrame, paid: pl.LazyFrame) -> pl.DataFrame:
    """One row per client with won invoices or payment days: the digests of its rows of each (``digests.by_key``:
    ``_n``, ``_h1``, ``_h2`` of the invoices, the same with ``_paid`` of the payment days, null for none) and its
    last payment day (``_last_paid``)."""
    won_d, paid_d, last = pl.collect_all([
        digests.by_key(won, "client_id"), digests.by_key(paid, "client_id"),
        paid.group_by("client_id").agg(_last_paid=pl.col("booking_date").max())])
    return (won_d.join(paid_d, on="client_id", how="full", coalesce=True, suffix="_paid")
            .join(last, on="client_id", how="left"))


def _later_days_only(fresh: pl.DataFrame, digest: pl.DataFrame, old_clients: pl.DataFrame,
                     paid: pl.DataFrame) -> pl.DataFrame:
    """Of the ``fresh`` clients (digests changed), those whose invoices are the published state's and whose
    payment days up to the state's last one are too, with that day (client_id, _last_paid): their only new
    inputs are later payment days."""
    won_digest, paid_digest = ["_n", "_h1", "_h2"], ["_n_paid", "_h1_paid", "_h2_paid"]
    before = old_clients.join(fresh, on="client_id", how="semi").filter(pl.col("_last_paid").is_not_null())
    up_to = digests.by_key(paid.lazy().join(before.lazy().select("client_id", "_last_paid"), on="client_id")
                           .filter(pl.col("booking_date") <= pl.col("_last_paid")).drop("_last_paid"),
                           "client_id").collect()
    now = (digest.join(fresh, on="client_id", how="semi").select("client_id", *won_digest)
           .join(up_to.rename(dict(zip(won_digest, paid_digest, strict=True))), on="client_id", how="left"))
    return (before.join(now, on=["client_id", *won_digest, *paid_digest], how="semi", nulls_equal=True)
            .select("client_id", "_last_paid"))


def _write_parts(target: Path, name: str, parts: pl.DataFrame) -> None:
    """One file of ``settle``'s parts and of their paid parts' cent-days."""
    parts.write_parquet(target / "parts" / f"{name}.parquet", compression="lz4")  # zstd took twice as long
    economics.paid_late_cent_days(parts.lazy()).collect().write_parquet(target / "paid_late" / f"{name}.parquet")


def month_fingerprint(settings: Settings, digests: dict[str, tuple[str, int, int, int] | None]) -> str:
    """sha256 of everything a month's rows of a group of clients depend on: the digests of their input
    partitions (``client_month.partition_digests``; None for an input without rows of them in the month), the
    settings build_month reads, and the code that computes it."""
    return hashlib.sha256(json.dumps({
        "reporting_currency": settings.reporting_currency, "default_margin": settings.economics.default_margin,
        "polars": pl.__version__, "code": _MONTH_CODE, "inputs": [digests[name] for name in client_month.INPUTS]},
        sort_keys=True).encode()).hexdigest()


def build_client_month(settings: Settings, job: MonthJob, version_dir: str) -> MonthResult:
    """Write one month's client_month file into the version directory from its input partition.

    A job without inputs is a month whose fingerprints equal the ones the published file was computed from
    (``prepare_marts`` decides, never for a backfill): the published file is hard-linked instead, the output
    being a pure function of the inputs. A job with ``reused`` groups of clients builds the others from its
    partition and takes those groups' rows from the published file (``client_month.merge_groups``). Reads and
    writes files only (no DuckDB), so it can run in any process that sees HOME.
    """
    fingerprint = job.fingerprint
    name = _month_file(job.month)
    target = Path(version_dir) / client_month.NAME / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # a retried task starts clean
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if job.inputs is None:
        assert job.previous_file is not None
        publish.link_or_copy(Path(job.previous_file), target)
        rows = pl.scan_parquet(target).select(pl.len()).collect().item()
        return MonthResult(job.month, name, rows, fingerprint, computed=False, worker=worker,
                           groups=(0, len(fingerprint)))
    if job.reused and job.hash_probe != client_month.hash_probe():  # e.g. a Dask worker on another polars build
        raise ClientbaseError(
            f"client_month {job.month}: this process's polars {pl.__version__} puts clients in other groups than "
            f"the process that cut the month's partitions; run every worker on the same environment "
            f"(uv sync --frozen of the same commit)")
    inputs = Path(job.inputs)
    frames = {name_: pl.scan_parquet(inputs / f"{name_}.parquet") for name_ in client_month.INPUTS}
    built = client_month.build_month(frames, dt.date.fromisoformat(job.month),
                                     reporting_currency=settings.reporting_currency,
                                     default_margin=settings.economics.default_margin)
    if job.reused:
        assert job.previous_file is not None
        built = client_month.merge_groups(built, pl.scan_parquet(job.previous_file), job.reused)
    frame = built.collect()
    written = publish.write_mart(Path(version_dir), client_month.NAME, frame, client_month.PARTITION_BY)
    if list(written) != [name]:
        raise ValueError(f"client_month for {job.month} wrote {sorted(written)}, expected {name}")
    return MonthResult(job.month, name, frame.height, fingerprint, computed=True, worker=worker,
                       groups=(len(fingerprint) - len(job.reused), len(job.reused)))


def build_asof_marts(settings: Settings, run_id: str, as_of: dt.date, plan: MonthPlan,
                     built: list[MonthResult]) -> dict[str, int]:
    """Read client_month back from the version directory and write every other mart (they are as of a day and
    read the whole history); record the months' fingerprints; return row counts per mart."""
    version_dir = Path(plan.version_dir)
    eco = settings.economics
    frames_in = _mart_inputs(settings, as_of)
    staged, payments, clients = frames_in["staged"], frames_in["payments"], frames_in["clients"]
    log_rows = frames_in["log"]
    months_dir = version_dir / client_month.NAME
    if not any(months_dir.glob("*.parquet")):  # no month at all: one empty file, as every mart has
        publish.write_mart(version_dir, client_month.NAME, pl.DataFrame(
            schema={c: t for c, (t, _) in client_month.SCHEMA.items()}), None)
    fingerprints = {**{k: v for k, v in plan.kept.items() if v}, **{r.file: r.fingerprint for r in built}}
    _write_fingerprints(version_dir, client_month.NAME, fingerprints)
    # small per-client frames that several marts read: computed once (lazy, each plan would recompute them)
    # the payments summed per client and day, which is all the marts below read of them (10M: 9.6M payments,
    # 7.1M client days)
    paid_days = behaviour.daily_payments(payments).collect().lazy()
    first = behaviour.first_purchases(paid_days).collect().lazy()
    window = m.window_bounds(as_of, eco.window_months)
    # first, before the settled invoices are read (only the scorecard reads and holds them): a full run's
    # retention reads every client day, ~1 GB at 10M on top of what is held
    retention = _retention(settings, plan, paid_days, frames_in["refunds"], first, window[1])
    months_all = publish.scan_mart(version_dir, client_month)
    regularity = behaviour.xyz(months_all, first, window=window, x=eco.xyz_x, y=eco.xyz_y,
                               min_months=eco.xyz_min_months).collect().lazy()
    beh = settings.behaviour
    segment_rules = tuple((r.name, r.team, r.rule) for r in settings.segments)
    ladder, transitions = _ladder(settings, plan, months_all, paid_days, clients, first, regularity, as_of)
    settlement = economics.invoice_settlement(settled_parts(version_dir),
                                              as_of=as_of, write_off_days=eco.write_off_days)
    scorecard = client_scorecard.build(
        months_all, clients, settlement, as_of=as_of, window_months=eco.window_months,
        reporting_currency=settings.reporting_currency, abc_a=eco.abc_a, abc_b=eco.abc_b, xyz=regularity,
        activity=behaviour.activity(paid_days, as_of=as_of, at_risk_factor=beh.at_risk_factor,
                                    window_days=settings.activity_window_days),
        trend=behaviour.turnover_trend(months_all, as_of=as_of),
        ladder=ladder.lazy().select("client_id", pl.col("step_with_xyz").alias("ladder_stage")),
        segments=segment_rules,
        clv=clv.scores(clv.client_summary(paid_days, as_of=as_of)), key_share=beh.key_client_share,
        ltv_min_segment=eco.ltv_min_segment,
        dependency_levels=(beh.dependency_diversify, beh.dependency_severe, beh.dependency_critical)).collect()
    if scorecard.height and scorecard["clv_revenue_12m"].null_count() == scorecard.height:
        log.warning("client_scorecard: no CLV (too few clients bought twice, or the BG/NBD or Gamma-Gamma fit "
                    "did not converge): the clv_* columns are empty in this run")
    managers = frames_in["managers"]
    unit_rows = key_clients.units(scorecard.lazy(), clients, managers).collect().lazy()
    key = key_clients.build(unit_rows, clients, share=beh.key_client_share).collect()
    audit = unprofitable_audit.build(scorecard.lazy(), months_all, as_of=as_of).collect()
    frames = {
        client_scorecard.NAME: scorecard,
        pareto_summary.NAME: pareto_summary.build(scorecard.lazy(), top_fraction=eco.top_share,
                                                  reach=eco.pareto_reach).collect(),
        whale_curve.NAME: whale_curve.build(scorecard.lazy()).collect(),
        unprofitable_audit.NAME: audit,
        phase_out_scenarios.NAME: phase_out_scenarios.build(scorecard.lazy(), months_all, as_of=as_of,
                                                            bottom=eco.phase_out_bottom).collect(),
        abc_xyz_matrix.NAME: abc_xyz_matrix.build(scorecard.lazy()).collect(),
        retention_period.NAME: retention,
        cohort_retention.NAME: cohort_retention.build(behaviour.cohorts(months_all, first)).collect(),
        key_clients.NAME: key,
        dependency.NAME: dependency.build(
            unit_rows, diversify=beh.dependency_diversify,
            severe=beh.dependency_severe, critical=beh.dependency_critical).collect(),
        target_portrait.NAME: target_portrait.build(scorecard.lazy(), clients).collect(),
        segments.NAME: segments.build(scorecard.lazy(), segment_rules).collect(),
        ladder_transitions.NAME: transitions,
        manager_load.NAME: manager_load.build(scorecard.lazy(), key.lazy(), managers,
                                              limit=beh.max_key_clients_per_manager).collect(),
        unmatched_counterparties.NAME: unmatched_counterparties.build(
            staged, frames_in["match"],
            crm_present=bool(clients.filter(pl.col("source") == "crm").select(pl.len()).collect().item()),
            min_amount=settings.identity.unmatched_min_amount,
            bank_names=settings.identity.bank_names,
            reporting_currency=settings.reporting_currency).collect(),
        # this run is published only if the marts gate passes; the mart says so (the warehouse table keeps
        # the live status and the finish time)
        run_log.NAME: run_log.build(log_rows.with_columns(
            status=pl.when(pl.col("run_id") == run_id).then(pl.lit("published")).otherwise(pl.col("status")),
            published_version=pl.when(pl.col("run_id") == run_id).then(pl.lit(run_id))
            .otherwise(pl.col("published_version")),
        )).collect(),
    }
    rows: dict[str, int] = {client_month.NAME: months_all.select(pl.len()).collect().item()}
    for mart in MARTS:
        if mart.NAME != client_month.NAME:
            written = publish.write_mart(version_dir, mart.NAME, frames[mart.NAME], mart.PARTITION_BY)
            rows[mart.NAME] = sum(written.values())
    return rows


_RETENTION_CODE = hashlib.sha256(b"".join(Path(mod.__file__).read_bytes() for mod in (
    behaviour, retention_period, m))).hexdigest()
_LADDER_CODE = hashlib.sha256(b"".join(Path(mod.__file__).read_bytes() for mod in (
    behaviour, ladder_transitions, m))).hexdigest()


def _payment_chain(plan: MonthPlan, first_month: dt.date, last_month: dt.date,
                   seed: dict) -> dict[dt.date, str] | None:
    """Per month from ``first_month`` to ``last_month``: a sha256 of ``seed`` (and polars' version) and the
    digests of the payment partitions of every month up to it (``MonthPlan.payment_digests``), so it changes
    with any payment up to the month's end. None for a backfill, which has no digests of every month."""
    if plan.payment_digests is None:
        return None
    chain = hashlib.sha256(json.dumps({**seed, "polars": pl.__version__}, sort_keys=True).encode())
    by_month = {}
    for month in pl.date_range(first_month, last_month, "1mo", eager=True):
        chain.update(json.dumps(plan.payment_digests.get(month.isoformat())).encode())
        by_month[month] = chain.hexdigest()
    return by_month


def _ladder(settings: Settings, plan: MonthPlan, months_all: pl.LazyFrame, paid_days: pl.LazyFrame,
            clients: pl.LazyFrame, first: pl.LazyFrame, regularity: pl.LazyFrame,
            as_of: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the ladder steps of the as-of month, the ladder_transitions mart), reusing the published mart's rows of
    the months whose inputs did not change.

    A month's moves compare the steps at its end and at the end of the month before. A step reads the client's
    payments up to the month's end (its purchases in client_month, which the month's payment partition
    determines, its last payment day, whether a client it referred has paid), the referral and exclusivity
    columns of the clients that have one, the ladder settings and the month's end (as-of, in the as-of
    month); XYZ only enters ``step_with_xyz``, which the moves do not read. So a month's fingerprint chains
    the payment partitions' digests up to it (``_payment_chain``) after a digest of those client columns, the
    settings and the code, and adds its end day; a month whose fingerprint equals the published one takes the
    published rows (a backfill computes every month). The history is walked from the month before the first
    other month (``behaviour.ladder_history(since=)``), or for the as-of month alone, whose steps the
    scorecard reads."""
    schema = {c: t for c, (t, _) in ladder_transitions.SCHEMA.items()}
    beh, window_days = settings.behaviour, settings.activity_window_days
    last_month = as_of.replace(day=1)
    first_payment = first.select(pl.col("first_payment").min()).collect().item()
    fingerprints: dict[str, str] = {}
    reused = pl.DataFrame(schema=schema)
    if first_payment is not None:
        # a client without a referrer, share of wallet or exclusive flag counts as neither exclusive nor referred
        # (as one missing from the table): only the others can move a step, so a new bank client changes nothing
        attributes = ("referred_by_client_id", "share_of_wallet", "is_exclusive")
        referral = clients.select("client_id", *attributes).filter(pl.any_horizontal(
            pl.col(attributes).is_not_null())).collect()
        by_month = _payment_chain(plan, first_payment.replace(day=1), last_month, {
            "code": _LADDER_CODE, "clients": client_month.rows_digest(referral), "window_days": window_days,
            "regular_months": beh.regular_months, "regular_window_months": beh.regular_window_months,
            "exclusive_share": beh.exclusive_share_of_wallet})
        if by_month is not None:
            fingerprints = {month.isoformat(): hashlib.sha256(
                f"{chain}|{min(m.month_end(month), as_of).isoformat()}".encode()).hexdigest()
                for month, chain in by_month.items()}
            previous = publish.current_version_dir(settings.home)
            old = _read_fingerprints(previous, ladder_transitions.NAME)
            same = [dt.date.fromisoformat(k) for k, v in fingerprints.items() if old.get(k) == v]
            if same:
                reused = publish.read_mart(previous, ladder_transitions).filter(
                    pl.col("month").is_in(same)).select(list(schema)).cast(schema)
    kept = set(reused["month"].unique().to_list())
    todo = sorted(dt.date.fromisoformat(k) for k in fingerprints if dt.date.fromisoformat(k) not in kept)
    if not fingerprints:  # a backfill, or no payment at all: the whole history
        since = None
    elif todo:  # from the month before the first month to compute (its moves start from that month's steps)
        since = behaviour.previous_period_start("month", todo[0])
    else:  # every month carried over: the as-of month's steps only, for the scorecard
        since = last_month
    history = behaviour.ladder_history(
        months_all, paid_days, clients, as_of=as_of, window_days=window_days, xyz_frame=regularity,
        first=first, regular_months=beh.regular_months, regular_window_months=beh.regular_window_months,
        exclusive_share=beh.exclusive_share_of_wallet, since=since).collect()
    computed = pl.DataFrame(schema=schema)
    if since is None or todo:
        moves = behaviour.ladder_transitions(history.lazy())
        computed = ladder_transitions.build(moves.filter(pl.col("month") >= todo[0]) if todo else moves
                                            ).collect().cast(schema)
    log.info("ladder_transitions: %d of %d months computed, the others carried over", computed["month"].n_unique(),
             computed["month"].n_unique() + reused["month"].n_unique())
    _write_fingerprints(Path(plan.version_dir), ladder_transitions.NAME, fingerprints)
    return (history.filter(pl.col("month") == last_month),
            pl.concat([reused, computed]).sort("month", "from_step", "to_step"))


def _retention(settings: Settings, plan: MonthPlan, paid_days: pl.LazyFrame, refunds: pl.LazyFrame,
               first: pl.LazyFrame, last_month: dt.date) -> pl.DataFrame:
    """The retention_period mart, reusing the published rows of the periods whose inputs did not change.
    ``paid_days``: the payments summed per client and day, all that retention reads of them (the days a client
    paid on and its revenue in cents per period; a full run at 10M: 9.6M payments -> 7.1M client days).

    A period's row reads only the payments and refunds of the months up to its end (activity on its boundary
    days looks back, new clients are those without an earlier payment, revenue retention compares it with the
    period before), so it is a function of those months' payment partitions (``MonthPlan.payment_digests``, the
    digests client_month's fingerprints use), ``activity_window_days`` and the code. Its fingerprint chains
    them; a period whose fingerprint equals the published one takes the published row (a backfill, without
    digests of every month, computes every period). The others are computed from the payments since the
    earliest day they read."""
    schema = {c: t for c, (t, _) in retention_period.SCHEMA.items()}
    version_dir = Path(plan.version_dir)
    first_payment = first.select(pl.col("first_payment").min()).collect().item()  # (no scan of the payments)
    if first_payment is None:
        rows = pl.DataFrame(schema=schema)
        fingerprints: dict[str, str] = {}
    else:
        window_days = settings.activity_window_days
        bounds = behaviour.periods(first_payment.replace(day=1), last_month).collect()
        key = pl.concat_str("period_type", pl.lit("|"), pl.col("period_start").cast(pl.String)).alias("_key")
        fingerprints, reused = {}, pl.DataFrame(schema=schema)
        by_month = _payment_chain(plan, first_payment.replace(day=1), last_month,
                                  {"code": _RETENTION_CODE, "window_days": window_days})
        if by_month is not None:
            fingerprints = {f"{kind}|{start.isoformat()}": by_month[end.replace(day=1)]
                            for kind, start, end in bounds.select("period_type", "period_start", "period_end")
                            .iter_rows()}
            previous = publish.current_version_dir(settings.home)
            old = _read_fingerprints(previous, retention_period.NAME)
            same = [k for k, v in fingerprints.items() if old.get(k) == v]
            if same:
                reused = (publish.read_mart(previous, retention_period).filter(key.is_in(same))
                          .select(list(schema)))
        reused = reused.cast(schema)
        todo = bounds.filter(~key.is_in(reused.select(key)["_key"].implode()))
        computed = pl.DataFrame(schema=schema)
        if todo.height:
            # the earliest day these periods read: the start of the period before, or the first payment day that
            # can make a client active on the day before the period
            since = min(min(behaviour.previous_period_start(kind, start), start - dt.timedelta(days=window_days))
                        for kind, start in todo.select("period_type", "period_start").iter_rows())
            recent = pl.col("booking_date") >= since
            computed = retention_period.build(behaviour.retention(
                paid_days.filter(recent), todo.lazy(), window_days=window_days, first=first,
                refunds=refunds.filter(recent))).collect().cast(schema)
        log.info("retention_period: %d of %d periods computed, the others carried over", todo.height, bounds.height)
        rows = pl.concat([reused, computed]).sort("period_type", "period_start")
    _write_fingerprints(version_dir, retention_period.NAME, fingerprints)
    return rows


def gate_marts(settings: Settings, run_id: str, version_dir: str, as_of: dt.date,
               carried: Sequence[str] = ()) -> GateOutcome:
    """Audit the written (not yet published) marts, reading back the files themselves (in DuckDB).

    ``carried``: client_month files carried over from the published version (``MonthResult.computed`` False, a
    backfill's ``MonthPlan.kept``). They are the very files that passed this gate when they were published,
    under the same suite (the month fingerprint covers the suite's code), and each file holds its month alone,
    so only the months computed by this run are checked row by row; the revenue reconciliation still reads
    every month."""
    version = Path(version_dir)
    skip = {client_month.NAME: set(carried)}
    datasets: dict[str, str | pl.DataFrame] = {}

    def read(files: list[Path]) -> str:  # paths are quoted literals (a query asset takes no parameters)
        listed = ", ".join(quote_literal(str(f.absolute())) for f in files)
        return f"SELECT * FROM read_parquet([{listed}], hive_partitioning = false)"  # noqa: S608

    for mart in MARTS:
        files = [f for f in sorted((version / mart.NAME).glob("*.parquet")) if f.name not in skip.get(mart.NAME, ())]
        # a mart without files (or with every month carried over) is an empty frame
        datasets[mart.NAME] = read(files) if files else pl.DataFrame(
            schema={c: t for c, (t, _) in mart.SCHEMA.items()})
    every_month = sorted((version / client_month.NAME).glob("*.parquet"))
    client_month_sql = read(every_month) if every_month else "SELECT NULL::DATE AS month, 0 AS revenue WHERE false"
    # sum of client revenue in the mart = sum of classified incoming payments in staging, per month, to the cent
    reconciliation = f"""
        WITH staged AS (
            SELECT date_trunc('month', booking_date)::DATE AS month,
                   coalesce(sum(amount_reporting) FILTER (WHERE category = 'client_payment'), 0) AS staged_revenue
            FROM staging.bank_transaction
            WHERE status = 'BOOK' AND category IN ('client_payment', 'refund') AND booking_date <= ?
            GROUP BY ALL),
        mart AS (SELECT month, sum(revenue) AS mart_revenue FROM ({client_month_sql}) GROUP BY month),
        both_sides AS (
            SELECT month, coalesce(staged_revenue, 0)::DECIMAL(38, 2) AS staged_revenue,
                   coalesce(mart_revenue, 0)::DECIMAL(38, 2) AS mart_revenue
            FROM staged FULL JOIN mart USING (month))
        SELECT *, staged_revenue - mart_revenue AS diff FROM both_sides
        ORDER BY month"""  # noqa: S608 - the file list is ours, quoted as literals
    with open_warehouse(settings) as con:
        # one row per month, computed once: as a GX query asset it ran for each of GX's four metric queries (each
        # reading all of staging and every client_month file: 10M bench, 2.5 s of the marts gate)
        datasets["revenue_reconciliation"] = query_polars(con, reconciliation, [as_of])
        outcome = run_gate("marts", run_id, datasets, suites.marts_suite(),
                           docs_dir=settings.data_docs_dir / "marts", con=con)
    return _record_gate(settings, outcome)


def publish_marts(settings: Settings, version_dir: str) -> Path:
    """Switch HOME/marts to the audited version and (re)create the ``marts.<name>`` views."""
    link = publish.publish(settings.home, Path(version_dir), keep=settings.keep_versions)
    names, dictionary = [mart.NAME for mart in MARTS], catalog()
    with open_warehouse(settings) as con:
        create_mart_views(con, names)
        replace_table(con, "marts.catalog", dictionary)  # the data dictionary, for BI tools
    publish.write_bi_catalog(settings.home / publish.BI_CATALOG, names, dictionary)
    return link


# ---- run log ---------------------------------------------------------------------------------------------

def start_run_log(settings: Settings, run_id: str, command: str, as_of: dt.date) -> dt.datetime:
    """Record the run; first tidy up after a run that was killed (the caller holds the HOME lock, so a run
    still marked 'running' is dead): its unpublished marts go, its log row says what happened."""
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    leftovers = publish.discard_unpublished(settings.home)
    shutil.rmtree(settings.home / SCRATCH_DIR, ignore_errors=True)  # intermediate files of a dead run
    current = publish.current_version_dir(settings.home)
    live = current.name if current is not None else None
    with open_warehouse(settings) as con:
        # a dead run whose version is the published one got as far as the switch: its marts are live
        con.execute("""
            UPDATE ops.run_log
            SET status = CASE WHEN run_id = ? THEN 'published' ELSE 'killed' END,
                published_version = CASE WHEN run_id = ? THEN run_id ELSE published_version END,
                error = 'the process ended without finishing the run (killed or crashed)'
                        || CASE WHEN list_contains(?, run_id) THEN '; its unpublished marts were removed' ELSE '' END
            WHERE status = 'running'""", [live, live, leftovers])
        con.execute("INSERT INTO ops.run_log (run_id, command, as_of, started_at, status) VALUES (?, ?, ?, ?, ?)",
                    [run_id, command, as_of, started, "running"])
    return started


def finish_run_log(settings: Settings, run_id: str, started: dt.datetime, **fields) -> None:
    finished = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    values = {"finished_at": finished, "duration_s": (finished - started).total_seconds(), **fields}
    for key in ("input_files", "rows_marts", "gates"):
        if key in values and not isinstance(values[key], str | type(None)):
            values[key] = json.dumps(values[key], default=str)
    unknown = set(values) - set(run_log.SCHEMA)
    if unknown:
        raise ValueError(f"not run_log columns: {sorted(unknown)}")
    assignments = ", ".join(f"{quote_ident(k)} = ?" for k in values)  # column names checked above; values bound
    with open_warehouse(settings) as con:
        con.execute(f"UPDATE ops.run_log SET {assignments} WHERE run_id = ?",  # noqa: S608
                    [*values.values(), run_id])


def file_summaries(stats: list[FileStats]) -> list[dict]:
    return [asdict(s) for s in stats]


def last_published_as_of(settings: Settings) -> dt.date | None:
    with open_warehouse(settings) as con:
        row = con.execute("SELECT as_of FROM ops.run_log WHERE status = 'published' "
                          "ORDER BY started_at DESC LIMIT 1").fetchone()
    return row[0] if row else None
