"""The stage step: raw -> staging (typed, deduplicated, FX-converted, resolved to clients), rebuilt or appended.

Its own module because staging is fingerprinted by the code that computes it (``_STAGE_CODE``): the staging on
disk is rebuilt when that code changes, and a change to the marts' or the gates' steps (``flows/steps.py``) must not
restage every raw row (10M transactions: ~80 s).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb
import polars as pl

from clientbase.config import Settings
from clientbase.errors import ConfigError
from transforms import crm_staging, identity, staging
from transforms import metrics as m
from warehouse.db import (
    SCRATCH_DIR,
    STAGING_DIR,
    export_parquet,
    open_warehouse,
    put_staging,
    query_polars,
    staging_files,
    write_slices,
)

log = logging.getLogger("clientbase")


@dataclass
class StageStats:
    rows_raw_total: int
    rows_staged: int
    duplicates: int
    clients: int
    skipped: bool = False  # the inputs were those of the staging on disk: nothing was recomputed
    appended: bool = False  # only new bank files: their rows were staged and appended, nothing else recomputed
    # only new CRM files: the staged bank rows (the dedupe reads no CRM data) were labelled, resolved and classified
    # again against the new clients; the CRM tables were rebuilt
    reclassified: bool = False
    # new CRM files that change no counterparty's client: the staged bank rows and matches were kept; the CRM tables
    # the new files feed and the client dimension were rebuilt (bank files of the same night were then appended)
    crm_refreshed: bool = False
    # no bank row changed since the staging passed the staged gate (a CRM refresh alone): the gate skips them
    bank_gated: bool = False
    # appended: the part file holding the new rows (None when the parts were merged into one file)
    new_part: str | None = None


STAGING_TABLES = ("staging.bank_transaction", "staging.client", "staging.client_match", "staging.counterparty",
                  "staging.invoice", "staging.activity", "staging.ticket", "staging.manager", "staging.crm_client")
MAX_STAGING_PARTS = 32  # staged increments appended before they are merged into one file
STAGE_SLICE_ROWS = 1_000_000  # raw tables past this many rows are staged (CRM) or kept (bank) a slice at a time
STAGE_STATE = "_stage.json"  # HOME/staging/_stage.json: the fingerprint of the inputs the staging files are from
# what staging is a function of besides the raw rows, the settings and the inbox files below: the code computing it
STAGE_CODE_MODULES = (staging, crm_staging, identity, m, sys.modules[__name__])
_STAGE_CODE = hashlib.sha256(b"".join(Path(mod.__file__).read_bytes() for mod in STAGE_CODE_MODULES)).hexdigest()


def stage_fingerprint(settings: Settings) -> str:
    """sha256 of everything staging depends on besides the ingested files: the settings stage reads, the FX rates
    and client overrides files, polars and the code."""
    digest = hashlib.sha256(json.dumps({
        "reporting_currency": settings.reporting_currency,
        "classification": settings.classification.model_dump(mode="json"),
        "identity": settings.identity.model_dump(mode="json"), "fx": settings.fx.model_dump(mode="json"),
        "payment_terms_days": settings.economics.payment_terms_days, "polars": pl.__version__,
        "code": _STAGE_CODE}, sort_keys=True).encode())
    for name in (settings.fx.rates_file, settings.identity.overrides_file):
        path = settings.inbox_dir / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"\0absent"))
    return digest.hexdigest()


def _inbox_table(settings: Settings, name: str, schema: dict[str, pl.DataType], what: str) -> pl.LazyFrame | None:
    """A small user-maintained CSV in the inbox (FX rates, client overrides); None when absent."""
    path = settings.inbox_dir / name
    if not path.is_file():
        return None
    try:
        frame = pl.read_csv(path, schema_overrides={c: pl.String for c in schema}, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} file ({exc}); expected CSV columns "
                          f"{', '.join(schema)}") from None
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: the {what} file lacks column(s) {', '.join(missing)}; expected "
                          f"{', '.join(schema)}")
    typed = frame.select(list(schema)).with_row_index("line", offset=2)
    try:
        converted = typed.with_columns(
            pl.col(c).str.strip_chars().str.to_date("%Y-%m-%d") if t == pl.Date
            else pl.col(c).str.strip_chars().cast(t) for c, t in schema.items())
    except pl.exceptions.PolarsError:
        bad = typed.with_columns(
            (pl.col(c).str.strip_chars().str.to_date("%Y-%m-%d", strict=False).is_null() if t == pl.Date
             else pl.col(c).str.strip_chars().cast(t, strict=False).is_null()).alias(f"_bad_{c}")
            for c, t in schema.items()).filter(pl.any_horizontal(pl.col("^_bad_.*$"))).head(1)
        line = bad["line"][0] if bad.height else "?"
        raise ConfigError(f"{path}, line {line}: a value of the {what} file is not valid; expected "
                          f"{', '.join(f'{c} ({t})' for c, t in schema.items())}") from None
    return converted.drop("line").lazy()


def stage(settings: Settings) -> StageStats:
    """Bring the staging tables up to date with the raw layer (deterministic: same raw -> same staging).

    - nothing staging depends on changed since the staging on disk was built (no new file; same settings, FX
      rates, overrides and code: ``stage_fingerprint``): kept as it is;
    - only bank files arrived since: their rows are staged against the staged ones and appended as a new part
      (``_append``), unless they change staged rows, which it detects;
    - CRM files arrived since (a CRM's nightly export), and every staged counterparty resolves to the same client
      against the new CRM as it did (``_refresh_crm``): the staged bank rows and matches are kept, the CRM tables
      the new files feed and the client dimension are rebuilt, and the night's bank files (if any) are appended
      as above;
    - only CRM files arrived since, and they change some counterparty's client: the bank side is rebuilt from the
      staged bank rows instead of the raw layer (``_restage(new_crm=...)``): the dedupe reads no CRM data
      and the staged rows are exactly the rows it keeps, so only what the new clients change (labels, matches,
      categories, clients) is recomputed, and the CRM tables the new files feed are staged from their rows as
      on a refresh;
    - anything else: a rebuild from the whole raw layer (``_restage``).

    The state file is removed before any staging file changes and written after the last one, so a run killed in
    between always rebuilds."""
    state_path = settings.home / STAGING_DIR / STAGE_STATE
    with open_warehouse(settings) as con:
        manifest = query_polars(con, "SELECT file_hash, ingest_seq, kind FROM ops.ingested_file ORDER BY ingest_seq")
    files = [[h, seq] for h, seq in manifest.select("file_hash", "ingest_seq").iter_rows()]
    fingerprint = stage_fingerprint(settings)
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    built, reason = None, "no staging on disk, or one built by other settings or code"
    current = state.get("fingerprint") == fingerprint and all(staging_files(settings.home, t) for t in STAGING_TABLES)
    if current and files == state["files"]:
        log.info("staging is up to date (no new file, same settings and code): kept as it is")
        return StageStats(**state["stats"], skipped=True)
    done = state["files"] if current else []
    if current and files[:len(done)] != done:
        current, reason = False, "files were removed from the raw layer"
    new = manifest.slice(len(done))
    new_bank = new.filter(pl.col("kind") == "bank")["file_hash"].to_list()
    new_crm = new.filter(pl.col("kind") == "crm")["file_hash"].to_list()
    # every path reads them: from the staged ones and the new files' clients when the staging is current
    crm, crm_changed = _crm_clients(settings, manifest.lazy(), new_crm if current else None)
    crm_clients = _present(crm)
    if current:
        state_path.unlink()
        # the night's CRM export first: the staged bank rows stay when every counterparty keeps its client
        refreshed = (_refresh_crm(settings, manifest.lazy(), new_crm, state, crm, crm_changed=crm_changed,
                                  clients=not new_bank) if new_crm else None)
        if isinstance(refreshed, str) and new_bank:
            reason = f"new bank and CRM files, and {refreshed}"
        elif isinstance(refreshed, str):
            log.info("only new CRM files, and %s: the staged bank rows are classified again, the CRM tables the "
                     "new files hold rows of staged from them", refreshed)
            stats, own_accounts = _restage(settings, manifest.lazy(), crm, new_crm=new_crm)
            built = replace(stats, reclassified=True), own_accounts
        elif new_bank:
            appended = _append(settings, manifest.lazy(), new_bank, state, crm_clients, crm_changed=crm_changed)
            built, reason = (None, appended) if isinstance(appended, str) else (appended, None)
            if built is not None and refreshed is not None:
                built = replace(built[0], crm_refreshed=True), built[1]
            if built is not None and not state.get("gated"):  # the staged rows have not passed the gate yet
                built = replace(built[0], new_part=None), built[1]
        else:
            built = replace(refreshed, bank_gated=bool(state.get("gated"))), state["own_accounts"]
    if built is None:
        log.info("restaging from the whole raw layer: %s", reason)
        state_path.unlink(missing_ok=True)
        built = _restage(settings, manifest.lazy(), crm)
    stats, own_accounts = built
    # 'gated': these staging files passed the staged gate (gate_staged sets it); 'crm_identity': what the staged
    # matches were resolved against (every path leaves staging.client_match equal to a resolve of the staged
    # counterparties against the CRM of all ingested files)
    write_json(state_path, {"fingerprint": fingerprint, "files": files, "own_accounts": own_accounts,
                             "gated": False, "crm_identity": identity.clients_digest(crm_clients),
                             "stats": {k: v for k, v in asdict(stats).items()
                                       if k not in ("skipped", "appended", "reclassified", "crm_refreshed",
                                                    "bank_gated", "new_part")}})
    return stats


def write_json(path: Path, state: dict) -> None:
    """Write a state file whole or not at all (a run killed while writing leaves the previous one)."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(scratch, path)


def _check_fx_rates(path: Path, rates: pl.DataFrame) -> None:
    """A rate must be positive, and a currency has one rate a day: a 0 would convert payments to nothing, and of
    two rates one would win unseen."""
    lines = rates.with_row_index("line", offset=2)  # the file's lines: the header is line 1
    bad = lines.filter(pl.col("rate") <= 0).head(1)
    if bad.height:
        row = bad.row(0, named=True)
        raise ConfigError(f"{path}, line {row['line']}: the rate of {row['currency']} on {row['rate_date']} is "
                          f"{row['rate'].normalize():f}; a rate must be positive (reporting currency per unit)")
    twice = lines.filter(pl.len().over("rate_date", "currency") > 1).sort("line").head(2)
    if twice.height:
        first, second = twice.rows(named=True)
        raise ConfigError(f"{path}, lines {first['line']} and {second['line']}: two rates of {first['currency']} "
                          f"on {first['rate_date']} ({first['rate'].normalize():f}, {second['rate'].normalize():f}); "
                          "keep one")


def _unknown_overrides(settings: Settings, overrides: pl.LazyFrame | None, crm_clients: pl.LazyFrame | None,
                       groups: pl.DataFrame) -> None:
    """Log the overrides that cannot apply: a client id the CRM does not have (a typo?), a counterparty key no
    counterparty has (one of its identifiers now belongs to a group with another key: ``groups``, the staged
    ``staging.counterparty``), or any override without a CRM (bank-only mode). They are ignored, so the run goes
    on; the log says which lines."""
    if overrides is None:
        return
    path = settings.inbox_dir / settings.identity.overrides_file
    rows = overrides.collect().with_row_index("line", offset=2)  # the header is line 1
    if crm_clients is None:
        if rows.height:
            log.warning("%s: %d override(s) ignored: there is no CRM to match to (bank-only mode)", path, rows.height)
        return
    known = crm_clients.select("client_id").collect()["client_id"]
    unknown = rows.filter(~pl.col("client_id").is_in(known.implode()) & (pl.col("client_id") != identity.OWN_CLIENT))
    for line, key, client in unknown.select("line", "counterparty_key", "client_id").head(20).iter_rows():
        log.warning("%s, line %d: override of %s ignored: the CRM has no client %r (use '%s' for 'no CRM client')",
                    path, line, key, client, identity.OWN_CLIENT)
    keys = groups.select(pl.col("counterparty_key").unique())["counterparty_key"].implode()
    missing = rows.filter(~pl.col("counterparty_key").is_in(keys)).select("line", "counterparty_key").head(20)
    if missing["counterparty_key"].str.starts_with("name:").any():  # the names' digests, once per combination
        groups = groups.with_columns(name=identity.name_key(pl.col("name")).str.strip_prefix("name:"))
    for line, key in missing.iter_rows():
        kind, _, value = (key or "").partition(":")
        column = {"tax": "tax_id", "acct": "account", "name": "name"}.get(kind)
        now = sorted(set(groups.filter(pl.col(column) == value)["counterparty_key"].to_list())) if column else []
        log.warning("%s, line %d: override of %s ignored: no counterparty has that key%s", path, line, key,
                    f"; its rows belong to {' / '.join(now)} now: use that key" if now else "")


def _stage_lookups(settings: Settings) -> tuple[pl.LazyFrame | None, pl.LazyFrame | None]:
    """The FX rates and the client overrides from the inbox (None when absent)."""
    fx_rates = _inbox_table(settings, settings.fx.rates_file,
                            {"date": pl.Date, "currency": pl.String, "rate": m.FX_RATE}, "FX rates")
    if fx_rates is not None:
        fx_rates = fx_rates.rename({"date": "rate_date"}).with_columns(pl.col("currency").str.to_uppercase())
        _check_fx_rates(settings.inbox_dir / settings.fx.rates_file, fx_rates.collect())
    overrides = _inbox_table(settings, settings.identity.overrides_file,
                             {"counterparty_key": pl.String, "client_id": pl.String}, "client overrides")
    if overrides is not None:  # 'name:Acme Trading' as the key its name has
        overrides = identity.override_keys(overrides)
    return fx_rates, overrides


def _stage_scratch(settings: Settings) -> Path:
    """A private scratch folder for one stage (removed by the caller when done)."""
    scratch = settings.home / SCRATCH_DIR / f"stage-{os.getpid()}-{secrets.token_hex(4)}"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _crm_clients(settings: Settings, manifest: pl.LazyFrame, new_files: list[str] | None) -> tuple[pl.DataFrame, bool]:
    """The CRM clients as staged (``staging.stage_crm_clients``: the latest version of each; no rows without a
    CRM) for this stage, and whether they differ from ``staging.crm_client``'s. ``new_files``: the CRM files
    ingested since the staging on disk (None: stage every version in the raw layer again, for a rebuild); their
    client rows, if any, replace the staged versions (``staging.supersede_crm_clients``), so a nightly full export
    costs its own clients, not every version ever ingested, and a night without one reads the staged table.
    Staged once per stage and handed to every path that reads them."""
    with open_warehouse(settings) as con:
        if new_files is None:
            raw = query_polars(con, 'SELECT * FROM raw."crm_clients"')
        else:
            raw = query_polars(con, 'SELECT * FROM raw."crm_clients" WHERE list_contains(?, file_hash)', [new_files])
    fresh = staging.stage_crm_clients(raw.lazy(), manifest)
    if new_files is None:
        return fresh.collect(), True
    staged = pl.scan_parquet(staging_files(settings.home, "staging.crm_client"))
    if not raw.height:
        return staged.collect(), False
    return staging.supersede_crm_clients(staged, fresh).collect(), True


def _present(crm: pl.DataFrame) -> pl.LazyFrame | None:
    """The CRM clients as the paths read them: None when there are none (bank-only mode)."""
    return crm.lazy() if crm.height else None


def _own_account_keys(txns: pl.LazyFrame) -> list[str]:
    """The accounts statements were issued for (normalised), as identifier_labels counts them own."""
    return sorted(staging.statement_accounts(txns).collect()["_acct"].to_list())


def _restage(settings: Settings, manifest: pl.LazyFrame, crm: pl.DataFrame, *,
             new_crm: list[str] | None = None) -> tuple[StageStats, list[str]]:
    """Every staging table from the raw layer (``crm``: the CRM clients of ``_crm_clients``). With ``new_crm``,
    the CRM files ingested since the staging on disk when no bank file arrived since: the bank rows the dedupe
    keeps are taken from the staged bank table instead of deduplicated again, and the CRM entity tables those
    files hold rows of are the staged ones superseded by their rows (``_supersede_crm``), the others kept."""
    staged_bank = new_crm is not None
    cfg = settings.classification
    crm_clients = _present(crm)
    fx_rates, overrides = _stage_lookups(settings)
    # big frames go through parquet files in a scratch folder: DuckDB streams the raw tables out (and its
    # connection, with its buffers, is closed while polars works), polars reads only the columns a plan uses and
    # sinks each staged table to a file, each frame is dropped as soon as the next one exists, and DuckDB loads
    # the files
    scratch = _stage_scratch(settings)
    try:
        with open_warehouse(settings) as con:
            if not staged_bank:
                raw = export_parquet(con, "raw.bank_transaction", scratch / "raw_bank_transaction.parquet")
                raw_crm = _export_crm(con, list(CRM_TABLES), scratch)
            raw_rows = con.execute("SELECT count(*) FROM raw.bank_transaction").fetchone()[0]
        if staged_bank:  # in staging order, with their keys and labels; classify runs again below
            staged_rows = pl.scan_parquet(staging_files(settings.home, "staging.bank_transaction"))
            labelled = staging.relabel_staged(staged_rows)
            own_accounts = _own_account_keys(staged_rows)
            found = staging.staged_counterparties(staged_rows)
            paying = staging.paying_counterparties(labelled).collect().lazy()  # narrow: read apart, not cached
            # the keys depend on the bank rows only: the staged groups are still theirs
            groups = pl.read_parquet(staging_files(settings.home, "staging.counterparty"))
        else:
            # the dedupe decides on the key columns alone; the wide rows it keeps then stream from the raw file,
            # labelled and classified, to the staged file (in memory, the raw table was held twice: as read, and
            # gathered in staging order; through a file of the kept rows, they were written and read once more)
            parts = staging.dedupe_parts(raw).collect()
            kept = staging.kept_raw_rows(parts.lazy(), manifest).collect()
            del parts
            keyed = staging.gather_kept(raw, kept)  # the counterparties read a few of its columns
            labels, groups, found = staging.group_counterparties(
                keyed, own_accounts=cfg.own_accounts,
                excluded_ids=cfg.excluded_counterparty_ids, excluded_keywords=cfg.excluded_purpose_keywords)
            own_accounts = _own_account_keys(keyed)
            # collected: classify reads which of them paid us from it instead of reading the rows twice
            found = paying = found.collect().lazy()
        client_match = identity.resolve(found, crm_clients, overrides,
                                        threshold=settings.identity.fuzzy_threshold).collect()
        _unknown_overrides(settings, overrides, crm_clients, groups)
        staged_files = {"staging.bank_transaction": scratch / "bank_transaction.parquet"}

        def classified(labelled: pl.LazyFrame) -> pl.LazyFrame:
            return staging.classify(labelled, client_match.lazy(), reporting_currency=settings.reporting_currency,
                                    fx_rates=fx_rates, max_rate_age_days=settings.fx.max_rate_age_days,
                                    paying=paying)

        def staged_slice(rows: tuple[int, int] | None = None) -> pl.LazyFrame:
            return classified(staging.label_rows(staging.gather_kept(raw, kept, rows), labels,
                                                 excluded_keywords=cfg.excluded_purpose_keywords))

        if staged_bank:
            classified(labelled).sink_parquet(staged_files["staging.bank_transaction"])
        # raw_rows: the exported table's rows
        elif raw_rows > STAGE_SLICE_ROWS and kept["_row"].is_sorted():  # a sink held most of the raw file
            write_slices(staged_files["staging.bank_transaction"],
                         (staged_slice((offset, STAGE_SLICE_ROWS)) for offset in range(0, raw_rows, STAGE_SLICE_ROWS)))
        else:
            staged_slice().sink_parquet(staged_files["staging.bank_transaction"])
        staged = pl.scan_parquet(staged_files["staging.bank_transaction"])
        rows_staged = staged.select(pl.len()).collect().item()
        clients = staging.stage_clients(staged, crm_clients, bank_names=settings.identity.bank_names).collect()
        staged_files.update(_supersede_crm(settings, manifest, new_crm, fx_rates, scratch) if staged_bank
                            else _stage_crm(settings, raw_crm, manifest, fx_rates, scratch))
        for table, frame in (("staging.client", clients), ("staging.client_match", client_match),
                             ("staging.counterparty", groups), ("staging.crm_client", crm)):
            staged_files[table] = scratch / f"{table.removeprefix('staging.')}.parquet"
            frame.write_parquet(staged_files[table])
        assert staged_bank or sorted(staged_files) == sorted(STAGING_TABLES), \
            "stage() keeps the staging when these files exist"
        part = _last_seq(manifest)
        with open_warehouse(settings) as con:
            for table, path in staged_files.items():
                put_staging(con, settings.home, table, path, part=part, replace=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return StageStats(rows_raw_total=raw_rows, rows_staged=rows_staged, duplicates=raw_rows - rows_staged,
                      clients=clients.height), own_accounts


# the raw CRM entity tables and the staging table each becomes (raw.crm_clients: _crm_clients, stage_clients)
CRM_TABLES = {"crm_managers": "staging.manager", "crm_activities": "staging.activity",
              "crm_tickets": "staging.ticket", "crm_invoices": "staging.invoice"}


def _export_crm(con: duckdb.DuckDBPyConnection, entities: list[str], scratch: Path,
                files: list[str] | None = None) -> dict[str, pl.LazyFrame]:
    """The raw CRM entity tables as parquet files in ``scratch`` (only the rows of ``files``, if given)."""
    # the names are code constants (CRM_TABLES)
    return {entity: export_parquet(con, f"raw.{entity}", scratch / f"raw_{entity}.parquet", files)
            for entity in entities}


def _stage_crm(settings: Settings, raw_crm: dict[str, pl.LazyFrame], manifest: pl.LazyFrame,
               fx_rates: pl.LazyFrame | None, scratch: Path) -> dict[str, Path]:
    """The staging tables of the given raw CRM entities, each sunk to a file in ``scratch``: {table: file}."""
    stagers = {"crm_managers": crm_staging.stage_managers, "crm_activities": crm_staging.stage_activities,
               "crm_tickets": crm_staging.stage_tickets, "crm_invoices": _stage_invoices(settings, fx_rates)}
    staged = {}
    for entity, raw in raw_crm.items():
        staged[CRM_TABLES[entity]] = path = scratch / f"{entity}.parquet"
        stage_fn = stagers[entity]
        rows = raw.select(pl.len()).collect().item()
        dropped = (crm_staging.dropped_rows(raw, manifest, entity.removeprefix("crm_"))
                   if rows > STAGE_SLICE_ROWS else None)
        if dropped is None:
            stage_fn(raw, manifest).sink_parquet(path)
        else:  # in slices: a sink of the whole table held most of it (polars issue #28569)
            write_slices(path, (stage_fn(raw, manifest, crm_staging.RawSlice(offset, STAGE_SLICE_ROWS, dropped))
                                for offset in range(0, rows, STAGE_SLICE_ROWS)))
    return staged


def _supersede_crm(settings: Settings, manifest: pl.LazyFrame, new_files: list[str], fx_rates: pl.LazyFrame | None,
                   scratch: Path) -> dict[str, Path]:
    """The CRM entity tables that ``new_files`` (ingested after every file of the staging on disk) hold rows of,
    each staged from those rows alone, whose versions then replace the staged ones (``crm_staging.supersede``),
    sunk to a file in ``scratch``: {table: file}. An entity without a row in them stays as it is."""
    with open_warehouse(settings) as con:
        exported = _export_crm(con, list(CRM_TABLES), scratch, files=new_files)
    raw_crm = {entity: rows for entity, rows in exported.items() if rows.select(pl.len()).collect().item()}
    new_staged = _stage_crm(settings, raw_crm, manifest, fx_rates, scratch)
    built = {}
    for entity in raw_crm:
        table = CRM_TABLES[entity]
        built[table] = scratch / f"{entity}_superseded.parquet"
        crm_staging.supersede(pl.scan_parquet(staging_files(settings.home, table)), pl.scan_parquet(new_staged[table]),
                              entity.removeprefix("crm_")).sink_parquet(built[table])
    return built


def _refresh_crm(settings: Settings, manifest: pl.LazyFrame, new_files: list[str], state: dict,
                 crm: pl.DataFrame, *, crm_changed: bool, clients: bool) -> StageStats | str:
    """Take a night's CRM files without touching the staged bank rows, when that equals a rebuild; else say why not.

    The bank side reads the CRM in one place only: ``identity.resolve`` of the counterparties against the CRM
    clients (and the overrides, unchanged, as the stage fingerprint is), whose result (``staging.client_match``)
    ``classify`` turns into clients and categories. The staged match is that resolve of every staged
    counterparty against the CRM staged with it (a night with CRM files went through this check, a
    reclassification or a rebuild; a night with bank files alone resolved its new counterparties against the
    same CRM). So when the same counterparties resolve to exactly the same rows against the new CRM
    (``staged_counterparties`` are the counterparties a rebuild finds), a rebuild would label, match and classify
    every bank row as staged, and they are kept: a CRM export that changes a client's region, manager, or
    invoices (the usual night) costs the resolve of the staged counterparties, not a reclassification of every
    bank row (10M transactions, 250k counterparties: the CRM night's stage 64 s -> 10 s). Not even the resolve
    when what it reads of the CRM (``identity.clients_digest``) is what the staged matches were resolved against
    (the state's ``crm_identity``): the same inputs give the same rows (10M: ~7 s of those 10 s).

    A CRM staging table is a function of its raw entity table alone (``crm_staging.latest`` over its files'
    ingest order), so only the entities the new files hold rows of are staged again, and only from those rows:
    their versions replace the staged ones (``crm_staging.supersede``), so a nightly full export does not make
    every CRM night stage all the versions ever ingested. ``crm``: the CRM clients (``_crm_clients``), written to
    ``staging.crm_client`` when ``crm_changed``. ``clients``: rebuild ``staging.client`` too (False when the
    night's bank files are appended next, which rebuilds it)."""
    home = settings.home
    crm_clients = _present(crm)
    fx_rates, overrides = _stage_lookups(settings)
    staged = pl.scan_parquet(staging_files(home, "staging.bank_transaction"))
    if state.get("crm_identity") == identity.clients_digest(crm_clients):
        # what resolve reads of the CRM did not change (a region, a manager, flags did): the same result
        log.info("the new CRM files change no client's name, tax id or accounts: the staged matches stand")
    else:
        match = identity.resolve(staging.staged_counterparties(staged), crm_clients, overrides,
                                 threshold=settings.identity.fuzzy_threshold).collect()
        if not match.equals(pl.read_parquet(staging_files(home, "staging.client_match"))):
            return "the new CRM changes which client some counterparty is"
    scratch = _stage_scratch(settings)
    try:
        built = _supersede_crm(settings, manifest, new_files, fx_rates, scratch)
        if crm_changed:
            built["staging.crm_client"] = scratch / "crm_client.parquet"
            crm.write_parquet(built["staging.crm_client"])
        count = state["stats"]["clients"]
        if clients:
            built["staging.client"] = scratch / "client.parquet"
            frame = staging.stage_clients(staged, crm_clients, bank_names=settings.identity.bank_names).collect()
            frame.write_parquet(built["staging.client"])
            count = frame.height
        part = _last_seq(manifest)
        with open_warehouse(settings) as con:
            for table, path in built.items():
                put_staging(con, home, table, path, part=part, replace=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("new CRM files change no counterparty's client: the staged bank rows are kept; %s rebuilt",
             ", ".join(sorted(built)) or "nothing else")
    return StageStats(**{**state["stats"], "clients": count}, crm_refreshed=True)


def _last_seq(manifest: pl.LazyFrame) -> int:
    return manifest.select(pl.col("ingest_seq").max()).collect().item() or 0


def _clients_after_append(home: Path, parts: list[Path], rows: pl.DataFrame, crm_clients: pl.LazyFrame | None, *,
                          bank_names: str) -> pl.DataFrame:
    """``staging.stage_clients`` over every part once ``rows`` are appended to the staged ones: one row per client,
    each worked out from that client's staged rows and CRM row alone, so only the clients of ``rows`` can change
    (an append keeps every staged row; the caller calls this only when the CRM clients did not change). Their
    rows are worked out again from their rows in every part, the others are the staged dimension's (10M staged
    rows, a one-day night's 6,295 clients: 3.8 -> 1.3 s)."""
    ids = rows.select(pl.col("client_id").drop_nulls().unique())["client_id"].implode()
    mine = pl.col("client_id").is_in(ids)
    again = staging.stage_clients(pl.scan_parquet(parts).filter(mine),
                                  None if crm_clients is None else crm_clients.filter(mine),
                                  bank_names=bank_names).collect()
    staged = pl.read_parquet(staging_files(home, "staging.client"))
    return pl.concat([staged.filter(~mine), again]).sort("client_id")


def _append(settings: Settings, manifest: pl.LazyFrame, new_files: list[str], state: dict,
            crm_clients: pl.LazyFrame | None, *, crm_changed: bool = False) -> tuple[StageStats, list[str]] | str:
    """Stage the rows of newly ingested bank files against the staged rows and append them as a new part.

    Equal to a rebuild (``tests/test_stage_increment.py`` checks it on generated sequences of files) because
    staging is row-wise except where rows meet — and where they meet, this either takes the staged side into
    account or gives up:

    - dedupe: ``staging.dedupe_increment`` (its docstring has the argument); gives up when a new row would drop
      a staged one (a booked copy of a staged pending row, a bank reference for a staged row without one);
    - own accounts: a new statement account makes staged payments to that account own transfers: gives up when a
      staged row has it as its counterparty account; otherwise the new rows are labelled with every own account;
    - identity: the counterparty keys are grouped again over the staged and the new identifiers
      (``identity.counterparty_groups``): gives up when that changes a staged row's key (an account seen with a
      tax id for the first time, a name-only payer's name now seen with an account); counterparties already
      matched keep their match (their first row is a staged one); only new ones are resolved, against the same
      CRM (a new CRM file always rebuilds);
    - refunds: money out to a bank counterparty is a refund once it has paid us: ``paid_before`` carries the
      staged payers; gives up when a counterparty pays for the first time and staged rows sent it money;
    - the client dimension: a client's row reads only the client's rows and its CRM row: the rows of the
      clients of the new rows are worked out again from every part, the others kept (``_clients_after_append``);
      all of them when the night's CRM export changed the CRM clients (``crm_changed``).

    Returns the stats and the own accounts seen so far, or why it gave up (the caller then rebuilds).
    """
    cfg = settings.classification
    fx_rates, overrides = _stage_lookups(settings)
    home = settings.home
    parts = staging_files(home, "staging.bank_transaction")
    staged = pl.scan_parquet(parts)
    with open_warehouse(settings) as con:
        new_raw = query_polars(con, "SELECT * FROM raw.bank_transaction WHERE list_contains(?, file_hash)",
                               [new_files])
        raw_rows = con.execute("SELECT count(*) FROM raw.bank_transaction").fetchone()[0]
    keyed = staging.transaction_keys(new_raw.lazy()).collect()
    related = staging.related_staged(staged, keyed.lazy()).collect()
    decided = staging.dedupe_increment(related.lazy(), keyed.lazy(), manifest).collect()
    if decided["_staged"].sum() != related.height:
        return "a new file supersedes staged rows (a booked copy of a pending one, or a bank reference)"
    new_rows = decided.filter(~pl.col("_staged")).drop("_staged").lazy()
    known_own = [*cfg.own_accounts, *state["own_accounts"]]
    labels = staging.identifier_labels(new_rows, own_accounts=known_own,
                                       excluded_ids=cfg.excluded_counterparty_ids).collect()
    own_accounts = _own_account_keys(new_rows)
    new_own = sorted(set(own_accounts) - set(state["own_accounts"]))
    if new_own and staged.filter(pl.col("category") != m.OWN_TRANSFER).select(
            m.normalise_account(pl.col("counterparty_account")).is_in(new_own).any()).collect().item():
        return f"a new statement account ({', '.join(new_own)}) was a counterparty of staged rows"
    old_groups = pl.read_parquet(staging_files(home, "staging.counterparty"))
    groups = identity.counterparty_groups(pl.concat([
        old_groups.lazy().select(*identity.EVIDENCE_SCHEMA),
        staging.counterparty_evidence(labels.lazy()).collect().lazy()])).collect()
    if old_groups.join(groups, on=list(identity.EVIDENCE_SCHEMA), how="left", nulls_equal=True, suffix="_now").filter(
            pl.col("counterparty_key") != pl.col("counterparty_key_now")).height:
        return "a new file joins staged counterparties into one (e.g. an account now seen with a tax id)"
    labelled = staging.label_rows(
        new_rows, staging.key_counterparties(labels.lazy(), groups.lazy(), excluded_ids=cfg.excluded_counterparty_ids),
        excluded_keywords=cfg.excluded_purpose_keywords).collect()
    old_match = pl.read_parquet(staging_files(home, "staging.client_match"))
    new_match = identity.resolve(
        staging.counterparties(labelled.lazy()).filter(~pl.col("counterparty_key").is_in(old_match["counterparty_key"])),
        crm_clients, overrides, threshold=settings.identity.fuzzy_threshold).collect()
    client_match = pl.concat([old_match, new_match])
    paid = staged.filter(m.is_client_payment() & m.is_booked()).select("client_id").unique()
    rows = staging.classify(labelled.lazy(), client_match.lazy(), reporting_currency=settings.reporting_currency,
                            fx_rates=fx_rates, max_rate_age_days=settings.fx.max_rate_age_days,
                            paid_before=paid).collect()
    first_payers = (rows.lazy().filter(m.is_client_payment() & m.is_booked()
                                       & pl.col("client_id").str.starts_with("bank:"))
                    .select("client_id").unique().join(paid, on="client_id", how="anti"))
    if staged.filter(pl.col("category") == m.OTHER_OUTGOING).select(
            client_id=pl.concat_str([pl.lit("bank:"), pl.col("counterparty_key")])
    ).join(first_payers, on="client_id", how="semi").select(pl.len()).collect().item():
        return "a counterparty paid for the first time after staged payments to it (they become refunds)"
    scratch = _stage_scratch(settings)
    try:
        part = _last_seq(manifest)
        built = {"staging.bank_transaction": scratch / "bank_transaction.parquet",
                 "staging.client_match": scratch / "client_match.parquet", "staging.client": scratch / "client.parquet",
                 "staging.counterparty": scratch / "counterparty.parquet"}
        rows.write_parquet(built["staging.bank_transaction"])
        client_match.write_parquet(built["staging.client_match"])
        groups.write_parquet(built["staging.counterparty"])
        parts = [*parts, built["staging.bank_transaction"]]
        clients = (staging.stage_clients(pl.scan_parquet(parts), crm_clients, bank_names=settings.identity.bank_names)
                   .collect() if crm_changed else
                   _clients_after_append(home, parts, rows, crm_clients, bank_names=settings.identity.bank_names))
        clients.write_parquet(built["staging.client"])
        compact = len(parts) > MAX_STAGING_PARTS
        if compact:  # one file again, the same rows in the same order (a night's part is small; many slow scans)
            built["staging.bank_transaction"] = scratch / "bank_transaction_compacted.parquet"
            pl.scan_parquet(parts).sink_parquet(built["staging.bank_transaction"])
        with open_warehouse(settings) as con:
            placed = {table: put_staging(con, home, table, path, part=part,
                                         replace=compact or table != "staging.bank_transaction")
                      for table, path in built.items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows_staged = state["stats"]["rows_staged"] + rows.height
    log.info("staged %d new rows of %d new file(s) against the %d staged ones", rows.height, len(new_files),
             state["stats"]["rows_staged"])
    return StageStats(rows_raw_total=raw_rows, rows_staged=rows_staged, duplicates=raw_rows - rows_staged,
                      clients=clients.height, appended=True,
                      new_part=None if compact else str(placed["staging.bank_transaction"])), \
        sorted({*state["own_accounts"], *own_accounts})


def _stage_invoices(settings: Settings, fx_rates: pl.LazyFrame | None):
    """raw invoices -> staging.invoice: typed, then amount and cost in the reporting currency."""
    def stage_fn(raw_invoices: pl.LazyFrame, manifest: pl.LazyFrame,
                 part: crm_staging.RawSlice | None = None) -> pl.LazyFrame:
        invoices = crm_staging.stage_invoices(raw_invoices, manifest, part,
                                              payment_terms_days=settings.economics.payment_terms_days)
        return staging.fx_convert(
            invoices.with_columns(booking_date=pl.col("issue_date")), fx_rates,
            reporting_currency=settings.reporting_currency, max_rate_age_days=settings.fx.max_rate_age_days,
        ).with_columns(
            amount=pl.col("amount_reporting"),
            cost=m.money(pl.col("cost").cast(pl.Float64) * pl.col("fx_rate").cast(pl.Float64)),
        ).drop("booking_date", "amount_reporting")
    return stage_fn


# ---- marts -----------------------------------------------------------------------------------------------
