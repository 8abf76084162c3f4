"""The whole pipeline end to end against a bare DuckDB SQL reference and a plain pandas implementation.

    uv run python -m bench.pipeline --transactions 1000000 --repeat 3
    uv run python -m bench.pipeline --transactions 10000000 --skip-pandas

1. Generator (seeded, vectorised, streamed month by month so memory stays flat at 100M): N bank transactions
   as monthly ``generic_signed`` bank CSV files (the profile the pipeline loads with its DuckDB fast path), the
   last day (as-of) in a separate one-day file for the nightly increment, and the CRM dump as canonical CSVs
   (clients, managers, one invoice per client payment plus 2% never paid, activities N/2, tickets N/20 — the
   proportions of bench/marts.py). Cached per size and seed under ``bench/out/pipeline/``: reruns skip it.
2. Ours: the plain step functions of flows/steps.py in the order of flows/pipeline.py::run_pipeline (discover,
   ingest each file, gate raw, stage, gate staged, build marts, gate marts, publish, report; no Prefect), in a
   fresh process and HOME, with wall time and peak RSS (psutil, sampled every 50 ms) per stage.
3. Increment: the one-day file added to that HOME's inbox and the pipeline run again in a fresh process; then a
   CRM dump alone (the clients re-exported with one change, ``crm_dump``), as a CRM's nightly export brings it.
4. DuckDB reference: bare SQL from the same inbox files (read_csv -> dedupe -> classify -> client_month ->
   scorecard ABC, XYZ, cohorts, monthly retention), reusing bench/marts.py's SQL.
5. pandas reference: the same marts in straightforward pandas (``--skip-pandas`` to leave it out).
Each implementation runs in its own process (clean RSS), all in one invocation (the time ratios compare runs
on the same machine state); ``--max-rss-gb`` stops one that would exhaust a shared machine's memory. The key numbers of the three must agree, or the run fails. Results are printed and
written as JSON to ``bench/out/pipeline/result_<N>.json``.

Targets (issue "performance suite", on a 2-core / 24 GB machine): 10M end to end <= 1.5x the DuckDB reference
and >= 10x faster than pandas; 100M within 24 GB; a one-day increment on a 100M history <= 5% of a full run.
Nothing here is a unit test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import marts as mart_bench  # noqa: E402

AS_OF = mart_bench.AS_OF  # 2026-10-31: the SQL reference's window constants assume these dates
START = mart_bench.START  # 2023-11-01
OUT = Path(__file__).with_name("out") / "pipeline"
OWN_ACCOUNT = "DE89370400440532013000"
WALK_INS, SUPPLIERS, MANAGERS = 20, 10, 50
INDUSTRIES = ("transport", "construction", "retail", "manufacturing", "it", "healthcare", "agriculture")
REGIONS = ("DE-North", "DE-South", "AT", "NL", "PL", "LT")
BANK_HEADER = ("account", "booking_date", "value_date", "amount", "currency", "counterparty_name",
               "counterparty_account", "purpose", "reference")
GENERATOR_VERSION = 1  # bump when the generated data changes: cached inputs of older versions are regenerated


# ---- generator ---------------------------------------------------------------------------------------------

def _months() -> list[dt.date]:
    out, day = [], START
    while day <= AS_OF:
        out.append(day)
        day = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return out


def _write_csv(frame: pl.DataFrame, path: Path, *, append: bool) -> None:
    with path.open("ab" if append else "wb") as fh:
        frame.write_csv(fh, include_header=not append, float_precision=2, date_format="%Y-%m-%d")


def _client_table(k: int, prefix: str, width: int) -> pl.Series:
    return pl.select(pl.format(prefix + "{}", pl.int_range(k, eager=False).cast(pl.String).str.zfill(width))
                     ).to_series()


def generate(root: Path, n: int, seed: int = 1) -> dict:
    """Write the inbox for ``n`` bank transactions under ``root`` (``inbox/`` and ``increment/``); returns counts.

    Everything comes from one ``numpy.random.Generator(seed)``, month by month: the same (n, seed) gives
    byte-identical files, and memory holds one month at a time.
    """
    rng = np.random.default_rng(seed)
    clients = max(100, n // 40)
    size = rng.pareto(1.2, clients) + 1  # Pareto-like purchase frequency: a few whales, a long tail
    cdf = np.cumsum(size) / size.sum()
    ticket = 50_000 * size ** 0.25  # typical payment in cents: bigger clients also buy a little bigger
    ids = _client_table(clients, "C", 7)
    ibans = _client_table(clients, "DE10", 18)
    names = pl.select(pl.format("Kunde {} GmbH", pl.lit(ids).str.slice(1))).to_series()
    walk_iban = _client_table(WALK_INS, "DE20", 18)
    walk_name = _client_table(WALK_INS, "Barverkauf Kasse ", 1)
    supp_iban = _client_table(SUPPLIERS, "DE30", 18)
    supp_name = pl.select(pl.format("Lieferant {} AG", pl.int_range(SUPPLIERS, eager=False))).to_series()
    days_total = (AS_OF - START).days + 1
    per_day = rng.multinomial(n, np.full(days_total, 1 / days_total))
    bank, crm, inc = root / "inbox" / "bank", root / "inbox" / "crm", root / "increment" / "bank"
    for folder in (bank, crm, inc):
        folder.mkdir(parents=True, exist_ok=True)
    counts = {"bank_rows": 0, "increment_rows": 0, "duplicates": 0, "invoices": 0, "activities": 0, "tickets": 0,
              "clients": clients}
    seq = 0
    first = True
    for month in _months():
        d0 = (month - START).days
        d1 = min(d0 + (_next(month) - month).days, days_total)
        rows = int(per_day[d0:d1].sum())
        dups = rows // 500  # 0.2% re-exported rows (same bank reference): removed by the dedupe
        base = rows - dups
        day_of = np.repeat(np.arange(d0, d1), per_day[d0:d1])[:base]
        u = rng.random(base)
        kind = np.select([u < 0.01, u < 0.015, u < 0.045], [1, 2, 3], 0)  # 0 pay, 1 walk-in, 2 supplier, 3 refund
        who = np.minimum(np.searchsorted(cdf, rng.random(base)), clients - 1)
        cents = np.maximum((ticket[who] * rng.lognormal(0, 0.5, base)).astype(np.int64), 100)
        other = rng.integers(0, WALK_INS, base)
        amount = np.select([kind == 0, kind == 1, kind == 2],
                           [cents, rng.integers(8_000, 90_000, base), -rng.integers(100_000, 5_000_000, base)],
                           -np.maximum(cents // 10, 10))
        late = rng.integers(-10, 60, base)
        frame = pl.DataFrame({"_day": day_of, "_kind": kind, "_who": who, "_other": other % SUPPLIERS,
                              "_walk": other, "_cents": amount, "_late": late,
                              "_seq": np.arange(seq, seq + base)})
        seq += base
        client = pl.col("_kind").is_in([0, 3])
        frame = frame.with_columns(
            booking_date=pl.lit(START) + pl.duration(days=pl.col("_day")),
            client_id=ids.gather(frame["_who"]),
            _iban=ibans.gather(frame["_who"]), _name=names.gather(frame["_who"]),
            _wiban=walk_iban.gather(frame["_walk"]), _wname=walk_name.gather(frame["_walk"]),
            _siban=supp_iban.gather(frame["_other"]), _sname=supp_name.gather(frame["_other"]),
        ).with_columns(
            account=pl.lit(OWN_ACCOUNT),
            value_date=pl.col("booking_date"),
            amount=pl.col("_cents") / 100,
            currency=pl.lit("EUR"),
            counterparty_name=pl.when(client).then("_name").when(pl.col("_kind") == 1).then("_wname")
            .otherwise("_sname"),
            counterparty_account=pl.when(client).then("_iban").when(pl.col("_kind") == 1).then("_wiban")
            .otherwise("_siban"),
            purpose=pl.when(pl.col("_kind") == 0).then(pl.format("Rechnung I{}", pl.col("_seq")))
            .when(pl.col("_kind") == 1).then(pl.lit("Barverkauf")).when(pl.col("_kind") == 2)
            .then(pl.lit("Wareneinkauf")).otherwise(pl.lit("Gutschrift Reklamation")),
            reference=pl.format("R{}", pl.col("_seq").cast(pl.String).str.zfill(10)),
        )
        pick = np.sort(rng.choice(base, dups, replace=False)) if dups else np.zeros(0, np.int64)
        statement = pl.concat([frame, frame[pick]]).sort("booking_date", "_seq", maintain_order=True)
        last = statement.filter(pl.col("booking_date") == AS_OF)
        history = statement.filter(pl.col("booking_date") < AS_OF)
        _write_csv(history.select(BANK_HEADER), bank / f"bank_{month:%Y-%m}.csv", append=False)
        if last.height:
            _write_csv(last.select(BANK_HEADER), inc / f"bank_{AS_OF}.csv", append=False)
        counts["bank_rows"] += history.height
        counts["increment_rows"] += last.height
        counts["duplicates"] += dups
        # invoices: one per client payment (issued 30 days before its due date, paid 10 days early to 59 late),
        # plus 2% never paid
        paid = frame.filter(pl.col("_kind") == 0)
        unpaid_n = paid.height // 50
        u_who = np.minimum(np.searchsorted(cdf, rng.random(unpaid_n)), clients - 1)
        u_day = rng.integers(d0, d1, unpaid_n)
        u_cents = np.maximum((ticket[u_who] * rng.lognormal(0, 0.5, unpaid_n)).astype(np.int64), 100)
        invoices = pl.concat([
            paid.select("client_id", "_seq", "_cents",
                        (pl.col("booking_date") - pl.duration(days=pl.col("_late") + 30)).alias("issue_date"),
                        (pl.col("booking_date") - pl.duration(days=pl.col("_late"))).alias("due_date")),
            pl.DataFrame({"client_id": ids.gather(u_who), "_seq": np.arange(seq, seq + unpaid_n),
                          "_cents": u_cents}).with_columns(
                issue_date=pl.lit(START) + pl.duration(days=pl.Series(u_day)),
                due_date=pl.lit(START) + pl.duration(days=pl.Series(u_day + 30))),
        ])
        seq += unpaid_n
        invoices = invoices.select(
            pl.format("I{}", pl.col("_seq").cast(pl.String).str.zfill(10)).alias("invoice_id"), "client_id",
            "issue_date", "due_date", (pl.col("_cents") / 100).alias("amount"), pl.lit("EUR").alias("currency"),
            ((pl.col("_cents") * 7 + 5) // 10 / 100).alias("cost"), pl.lit("won").alias("status"))
        _write_csv(invoices, crm / "invoices.csv", append=not first)
        counts["invoices"] += invoices.height
        # CRM time: activities N/2 and tickets N/20 spread over all clients
        a = rows // 2
        acts = pl.DataFrame({
            "_n": np.arange(counts["activities"], counts["activities"] + a),
            "client_id": ids.gather(rng.integers(0, clients, a)),
            "manager_id": pl.Series(rng.integers(1, MANAGERS + 1, a)),
            "_day": rng.integers(d0, d1, a), "_minute": rng.integers(8 * 60, 18 * 60, a),
            "duration_minutes": rng.integers(5, 90, a),
        }).select(
            pl.format("A{}", pl.col("_n").cast(pl.String).str.zfill(10)).alias("activity_id"), "client_id",
            pl.format("M{}", pl.col("manager_id").cast(pl.String).str.zfill(2)).alias("manager_id"),
            pl.lit("call").alias("activity_type"),
            (pl.lit(dt.datetime.combine(START, dt.time())) + pl.duration(days=pl.col("_day"),
                                                                         minutes=pl.col("_minute")))
            .dt.strftime("%Y-%m-%dT%H:%M").alias("started_at"),
            "duration_minutes")
        _write_csv(acts, crm / "activities.csv", append=not first)
        counts["activities"] += a
        t = rows // 20
        opened = rng.integers(d0, d1, t)
        tickets = pl.DataFrame({
            "_n": np.arange(counts["tickets"], counts["tickets"] + t),
            "client_id": ids.gather(rng.integers(0, clients, t)),
            "_open": opened, "_close": opened + rng.integers(0, 10, t),
            "minutes_spent": rng.integers(10, 240, t), "_m": rng.integers(1, MANAGERS + 1, t),
        }).select(
            pl.format("T{}", pl.col("_n").cast(pl.String).str.zfill(10)).alias("ticket_id"), "client_id",
            (pl.lit(START) + pl.duration(days=pl.col("_open"))).alias("opened_at"),
            (pl.lit(START) + pl.duration(days=pl.col("_close"))).alias("closed_at"), "minutes_spent",
            pl.format("M{}", pl.col("_m").cast(pl.String).str.zfill(2)).alias("manager_id"))
        _write_csv(tickets, crm / "tickets.csv", append=not first)
        counts["tickets"] += t
        first = False
    _write_csv(pl.DataFrame({
        "client_id": ids, "name": names, "tax_id": pl.Series([None] * clients, dtype=pl.String),
        "accounts": ibans,
        "industry": pl.Series(INDUSTRIES).gather(rng.integers(0, len(INDUSTRIES), clients)),
        "region": pl.Series(REGIONS).gather(rng.integers(0, len(REGIONS), clients)),
        "created_date": pl.Series(rng.integers(0, 2000, clients)),
        "manager_id": pl.Series(rng.integers(1, MANAGERS + 1, clients)),
    }).with_columns(created_date=pl.lit(dt.date(2018, 1, 1)) + pl.duration(days=pl.col("created_date")),
                    manager_id=pl.format("M{}", pl.col("manager_id").cast(pl.String).str.zfill(2))),
        crm / "clients.csv", append=False)
    _write_csv(pl.DataFrame({
        "manager_id": [f"M{i:02d}" for i in range(1, MANAGERS + 1)],
        "name": [f"Manager {i}" for i in range(1, MANAGERS + 1)],
        "department": [("Key Accounts", "SMB Sales", "Customer Success")[i % 3] for i in range(MANAGERS)],
        "hourly_cost": [float(40 + i % 30) for i in range(MANAGERS)], "currency": ["EUR"] * MANAGERS,
    }), crm / "managers.csv", append=False)
    return counts


def _next(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def cached_inputs(n: int, seed: int) -> tuple[Path, dict]:
    """The generated inputs for (n, seed), generating them once (written to a temp dir, then renamed)."""
    root = OUT / f"n{n}_seed{seed}_v{GENERATOR_VERSION}"
    manifest = root / "manifest.json"
    if manifest.is_file():
        return root, json.loads(manifest.read_text())
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    counts = generate(tmp, n, seed)
    counts["generate_s"] = round(time.perf_counter() - start, 2)
    counts["bytes"] = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    (tmp / "manifest.json").write_text(json.dumps(counts, indent=1))
    tmp.rename(root)
    return root, counts


def crm_dump(root: Path) -> Path:
    """The next night's CRM dump for the cached inputs under ``root``: the clients re-exported with one change (the
    last client moved to another region), as a CRM system's nightly export brings them. Written once, next to the
    cached inputs; returns its inbox folder."""
    folder = root / "crm_dump"
    target = folder / "crm" / f"clients_{AS_OF + dt.timedelta(days=1)}.csv"
    if not target.is_file():
        clients = pl.read_csv(root / "inbox" / "crm" / "clients.csv", infer_schema=False)
        changed = clients.with_columns(
            region=pl.when(pl.int_range(pl.len()) == pl.len() - 1).then(pl.lit("XX")).otherwise(pl.col("region")))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = root / f"{target.name}.partial"  # outside the inbox folder: a crash leaves nothing to ingest there
        changed.write_csv(partial)
        partial.rename(target)
    return folder


# ---- measuring -----------------------------------------------------------------------------------------------

class Meter:
    """Wall time and peak RSS per stage; a thread samples this process's RSS every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._peak = self._stage_peak = self._rss()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.stages: list[dict] = []
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        return self._proc.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._bump(self._rss())

    def _bump(self, rss: int) -> None:
        with self._lock:
            self._peak = max(self._peak, rss)
            self._stage_peak = max(self._stage_peak, rss)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        rss = self._rss()
        with self._lock:
            self._stage_peak = rss
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self._bump(self._rss())
        self.stages.append({"stage": name, "seconds": round(seconds, 3), "peak_rss_gb": round(self._stage_peak / 1e9, 3)})
        progress = os.environ.get("BENCH_PROGRESS")
        if progress:  # each stage as it ends: a long run that is stopped or cut off keeps what it measured
            with open(progress, "a") as fh:
                fh.write(json.dumps(self.stages[-1]) + "\n")

    def close(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._bump(self._rss())
        return {"stages": self.stages, "seconds": round(sum(s["seconds"] for s in self.stages), 3),
                "peak_rss_gb": round(self._peak / 1e9, 3)}


# ---- ours: the pipeline's own steps -------------------------------------------------------------------------

def run_ours(home: Path, inbox: Path) -> dict:
    """flows/pipeline.py::run_pipeline without Prefect: the same steps in the same order, each timed."""
    from clientbase.config import load_settings
    from clientbase.report import write_report
    from expectations.gate import preload
    from flows import steps
    from warehouse import publish
    from warehouse.db import home_lock

    meter = Meter()
    preload()  # as run_pipeline does
    settings = load_settings(home, inbox=inbox, as_of=AS_OF)
    with home_lock(settings.home):
        run_id = steps.new_run_id()
        started = steps.start_run_log(settings, run_id, "bench", AS_OF)
        fields: dict = {}
        version_dir = None
        published = False
        try:
            with meter.stage("discover"):
                files, _ = steps.discover(settings)
            stats = []
            order = steps.commit_order(settings)  # as flows/pipeline.py::load_files: files load on a few threads
            for kind in ("bank", "crm"):  # discover lists bank files first, then CRM: the run order is kept
                batch = [(n, f) for n, f in enumerate(files) if f.kind == kind]  # (position, file)
                if batch:
                    with meter.stage(f"ingest {kind} ({len(batch)} files)"):
                        with ThreadPoolExecutor(max_workers=settings.execution.ingest_workers) as pool:
                            stats += steps.loaded_files(list(pool.map(
                                lambda job: _outcome(settings, job[1], run_id, order.turn(job[0], job[1].relative)),
                                batch)))
            fields.update(input_files=steps.file_summaries(stats), files_new=len(stats),
                          rows_raw=sum(s.rows_raw for s in stats),
                          rows_quarantined=sum(s.rows_quarantined for s in stats))
            with meter.stage("gate raw"):
                steps.gate_raw(settings, run_id)
            with meter.stage("stage"):
                stage_stats = steps.stage(settings)
            fields.update(rows_staged=stage_stats.rows_staged, duplicates=stage_stats.duplicates)
            with meter.stage("gate staged"):
                steps.gate_staged(settings, run_id, stage_stats.new_part, stage_stats.bank_gated)
            with meter.stage("prepare months"):
                plan = steps.prepare_marts(settings, run_id, AS_OF, None)
                version_dir = plan.version_dir
            with meter.stage("client_month per month"):  # the flow's default runner: a small thread pool
                with ThreadPoolExecutor(max_workers=settings.execution.workers) as pool:
                    built = list(pool.map(lambda job: steps.build_client_month(settings, job, plan.version_dir),
                                          plan.jobs))
            with meter.stage("as-of marts"):
                rows = steps.build_asof_marts(settings, run_id, AS_OF, plan, built)
            fields["rows_marts"] = rows
            with meter.stage("gate marts"):
                steps.gate_marts(settings, run_id, version_dir, AS_OF,
                                 [r.file for r in built if not r.computed] + list(plan.kept))
            with meter.stage("publish"):
                link = steps.publish_marts(settings, version_dir)
            published = True
            fields.update(status="published", published_version=run_id)
            with meter.stage("report"):
                write_report(link, settings.reports_dir, AS_OF, settings.reporting_currency, settings.data_docs_dir)
        finally:
            if version_dir is not None and not published:
                publish.discard(Path(version_dir))
            steps.discard_scratch(settings, run_id)
            steps.finish_run_log(settings, run_id, started, **fields)
    result = meter.close()
    result["numbers"] = _our_numbers(link, stage_stats.rows_staged)
    result["months_computed"] = [sum(r.computed for r in built), len(plan.jobs) + len(plan.kept)]
    result["groups_built"] = [sum(r.groups[0] for r in built if r.computed), sum(len(j.fingerprint) for j in plan.jobs)]
    return result


def _outcome(settings, item, run_id: str, turn):
    """``ingest_file``'s stats, or the error it raised (what a Prefect future's result gives the flow)."""
    from flows import steps

    try:
        return steps.ingest_file(settings, item, run_id, turn)
    except Exception as exc:  # noqa: BLE001 - handed to steps.loaded_files, which raises the first
        return exc


def _our_numbers(link: Path, rows_staged: int) -> dict:
    def mart(name: str) -> pl.DataFrame:
        return pl.read_parquet(link / name / "*.parquet")

    months, card = mart("client_month"), mart("client_scorecard")
    retention = mart("retention_period").filter(pl.col("period_type") == "month")
    return _numbers(rows_staged=rows_staged, revenue=months["revenue"].sum(), refunds=months["refunds"].sum(),
                    net_profit=months["net_profit"].sum(),
                    clients=months.filter(pl.col("revenue") > 0)["client_id"].n_unique(),
                    clients_a=card.filter(pl.col("abc_revenue") == "A").height,
                    x_clients=card.filter(pl.col("xyz") == "X").height,
                    cohort_active=mart("cohort_retention")["active_clients"].sum(),
                    retention_e=retention["clients_end"].sum())


def _numbers(**values) -> dict:
    """Key numbers as JSON-safe values: money as a 2-decimal string, counts as int."""
    from decimal import Decimal

    out = {}
    for key, value in values.items():
        if key in ("revenue", "refunds", "net_profit"):
            exact = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
            out[key] = str(exact.quantize(Decimal("0.01")))
        else:
            out[key] = int(value)
    return out


# ---- DuckDB reference ----------------------------------------------------------------------------------------

_BANK_COLUMNS = {"account": "VARCHAR", "booking_date": "DATE", "value_date": "DATE", "amount": "DECIMAL(18,2)",
                 "currency": "VARCHAR", "counterparty_name": "VARCHAR", "counterparty_account": "VARCHAR",
                 "purpose": "VARCHAR", "reference": "VARCHAR"}
_CRM_COLUMNS = {
    "clients": {"client_id": "VARCHAR", "name": "VARCHAR", "tax_id": "VARCHAR", "accounts": "VARCHAR",
                "industry": "VARCHAR", "region": "VARCHAR", "created_date": "DATE", "manager_id": "VARCHAR"},
    "managers": {"manager_id": "VARCHAR", "name": "VARCHAR", "department": "VARCHAR",
                 "hourly_cost": "DECIMAL(18,2)", "currency": "VARCHAR"},
    "invoices": {"invoice_id": "VARCHAR", "client_id": "VARCHAR", "issue_date": "DATE", "due_date": "DATE",
                 "amount": "DECIMAL(18,2)", "currency": "VARCHAR", "cost": "DECIMAL(18,2)", "status": "VARCHAR"},
    "activities": {"activity_id": "VARCHAR", "client_id": "VARCHAR", "manager_id": "VARCHAR",
                   "activity_type": "VARCHAR", "started_at": "TIMESTAMP", "duration_minutes": "DOUBLE"},
    "tickets": {"ticket_id": "VARCHAR", "client_id": "VARCHAR", "opened_at": "DATE", "closed_at": "DATE",
                "minutes_spent": "DOUBLE", "manager_id": "VARCHAR"},
}

# read_csv'd bank rows -> the staged shape bench/marts.py's SQL reads (client_id, booking_date,
# amount_reporting, category, status): one row per account and bank reference; the counterparty account
# (normalised like metrics.normalise_account) resolved to the CRM client holding it, else the counterparty is
# its own client; categories as staging.classify (every amount is in EUR, the reporting currency).
STAGE_SQL = """
CREATE TABLE staged AS
WITH crm_accounts AS (
    SELECT acct, min(client_id) AS client_id
    FROM (SELECT client_id, upper(regexp_replace(unnest(string_split(accounts, ';')), '[^0-9A-Za-z]', '', 'g')) AS acct
          FROM crm_clients)
    WHERE acct <> '' GROUP BY acct HAVING count(DISTINCT client_id) = 1
), own AS (SELECT DISTINCT upper(regexp_replace(account, '[^0-9A-Za-z]', '', 'g')) AS acct FROM bank),
deduped AS (SELECT DISTINCT ON (account, reference) * FROM bank),
labelled AS (
    SELECT k.booking_date, k.amount, c.client_id AS crm_client, o.acct IS NOT NULL AS own_transfer,
           coalesce(c.client_id, 'bank:acct:' || k.cp) AS cid
    FROM (SELECT *, nullif(upper(regexp_replace(counterparty_account, '[^0-9A-Za-z]', '', 'g')), '') AS cp
          FROM deduped) k
    LEFT JOIN crm_accounts c ON c.acct = k.cp LEFT JOIN own o ON o.acct = k.cp
)
SELECT CASE WHEN NOT own_transfer THEN cid END AS client_id, booking_date, amount AS amount_reporting,
       'BOOK' AS status,
       CASE WHEN own_transfer THEN 'own_transfer'
            WHEN amount > 0 AND cid IS NOT NULL THEN 'client_payment'
            WHEN amount > 0 THEN 'unidentified_incoming'
            WHEN cid IS NOT NULL AND (crm_client IS NOT NULL
                                      OR bool_or(amount > 0 AND NOT own_transfer) OVER (PARTITION BY cid))
                THEN 'refund'
            ELSE 'other_outgoing' END AS category
FROM labelled
"""


def run_duckdb(inbox: Path) -> dict:
    import duckdb

    meter = Meter()
    con = duckdb.connect()
    bank_files = sorted(str(p) for p in (inbox / "bank").glob("*.csv"))
    with meter.stage("read + stage bank"):
        con.execute("CREATE TABLE bank AS SELECT * FROM read_csv($files, header=true, auto_detect=false, "
                    "columns=$columns)", {"files": bank_files, "columns": _BANK_COLUMNS})
        crm_path = inbox / "crm" / "clients.csv"
        con.execute("CREATE TABLE crm_clients AS SELECT * FROM read_csv($path, header=true, auto_detect=false, "
                    "columns=$columns)", {"path": str(crm_path), "columns": _CRM_COLUMNS["clients"]})
        con.execute(STAGE_SQL)
    with meter.stage("read CRM"):
        for entity in ("managers", "invoices", "activities", "tickets"):
            # the table name is a code constant; the path and columns are bound
            con.execute(f"CREATE TABLE {entity} AS SELECT * FROM read_csv($path, header=true, "  # noqa: S608
                        "auto_detect=false, columns=$columns)",
                        {"path": str(inbox / "crm" / f"{entity}.csv"), "columns": _CRM_COLUMNS[entity]})
    with meter.stage("client_month + scorecard"):
        # bench/marts.py's SQL: code constants; the as-of date is bound
        con.execute("CREATE TABLE client_month AS " + mart_bench.CLIENT_MONTH_CTES  # noqa: S608
                    + " SELECT * FROM client_month", {"as_of": AS_OF})
        revenue, refunds, profit, clients = con.execute(
            "SELECT sum(revenue), sum(refunds), sum(net_profit), count(DISTINCT client_id) FILTER (WHERE revenue > 0) "
            "FROM client_month").fetchone()
        _, _, clients_a, _ = con.execute("WITH " + mart_bench.SCORECARD_CTES).fetchone()
    with meter.stage("XYZ, cohorts, retention"):
        x_clients, cohort_active, retention_e = con.execute(mart_bench.BEHAVIOUR_SQL).fetchone()
    rows_staged = con.execute("SELECT count(*) FROM staged").fetchone()[0]
    con.close()
    result = meter.close()
    result["numbers"] = _numbers(rows_staged=rows_staged, revenue=revenue, refunds=refunds, net_profit=profit,
                                 clients=clients, clients_a=clients_a, x_clients=x_clients,
                                 cohort_active=cohort_active, retention_e=retention_e)
    return result


# ---- pandas reference ----------------------------------------------------------------------------------------

def run_pandas(inbox: Path) -> dict:
    """The same marts in plain pandas: read_csv, drop_duplicates, merge, groupby, merge_asof. Money in cents."""
    import pandas as pd

    meter = Meter()

    def norm(s: pd.Series) -> pd.Series:
        cleaned = s.str.upper().str.replace(r"[^0-9A-Z]", "", regex=True)
        return cleaned.mask(cleaned == "")

    def month(s: pd.Series) -> pd.Series:
        return s.dt.to_period("M").dt.to_timestamp()

    with meter.stage("read + stage bank"):
        bank = pd.concat([pd.read_csv(p, usecols=["account", "booking_date", "amount", "counterparty_account",
                                                  "reference"], dtype=str)
                          for p in sorted((inbox / "bank").glob("*.csv"))], ignore_index=True)
        bank = bank.drop_duplicates(subset=["account", "reference"], keep="first")
        bank["booking_date"] = pd.to_datetime(bank["booking_date"], format="%Y-%m-%d")
        bank["cents"] = (bank["amount"].astype(float) * 100).round().astype("int64")
        bank["cp"] = norm(bank["counterparty_account"])
        crm_clients = pd.read_csv(inbox / "crm" / "clients.csv", usecols=["client_id", "accounts"], dtype=str)
        accts = crm_clients.assign(acct=crm_clients["accounts"].str.split(";")).explode("acct")
        accts["acct"] = norm(accts["acct"].fillna(""))
        accts = accts.dropna(subset=["acct"]).drop_duplicates(["acct", "client_id"])
        accts = accts[~accts["acct"].duplicated(keep=False)].set_index("acct")["client_id"]
        own = set(norm(bank["account"]).dropna())
        bank["crm_client"] = bank["cp"].map(accts)
        own_transfer = bank["cp"].isin(own)
        cid = bank["crm_client"].fillna("bank:acct:" + bank["cp"])
        paid_us = (bank["cents"] > 0) & ~own_transfer
        has_paid = paid_us.groupby(cid).transform("any")
        category = np.select(
            [own_transfer, (bank["cents"] > 0) & cid.notna(), bank["cents"] > 0,
             cid.notna() & (bank["crm_client"].notna() | has_paid.fillna(False).astype(bool))],
            ["own_transfer", "client_payment", "unidentified_incoming", "refund"], "other_outgoing")
        staged = pd.DataFrame({"client_id": cid.where(~own_transfer), "booking_date": bank["booking_date"],
                               "cents": bank["cents"], "category": category})
    with meter.stage("read CRM"):
        crm = inbox / "crm"
        managers = pd.read_csv(crm / "managers.csv", usecols=["manager_id", "hourly_cost"], dtype={"manager_id": str})
        invoices = pd.read_csv(crm / "invoices.csv", dtype={"invoice_id": str, "client_id": str, "status": str,
                                                            "amount": str, "cost": str},
                               parse_dates=["issue_date", "due_date"])
        invoices["cents"] = (invoices["amount"].astype(float) * 100).round().astype("int64")
        invoices["cost_cents"] = (invoices["cost"].astype(float) * 100).round().astype("int64")
        activities = pd.read_csv(crm / "activities.csv", usecols=["client_id", "manager_id", "started_at",
                                                                  "duration_minutes"],
                                 dtype={"client_id": str, "manager_id": str}, parse_dates=["started_at"])
        tickets = pd.read_csv(crm / "tickets.csv", usecols=["client_id", "manager_id", "opened_at", "minutes_spent"],
                              dtype={"client_id": str, "manager_id": str}, parse_dates=["opened_at"])
    with meter.stage("client_month + scorecard"):
        as_of = pd.Timestamp(AS_OF)
        pay = staged[(staged["category"] == "client_payment") & (staged["booking_date"] <= as_of)]
        ref = staged[(staged["category"] == "refund") & (staged["booking_date"] <= as_of)]
        money = pd.concat([
            pay.assign(month=month(pay["booking_date"])).groupby(["client_id", "month"])["cents"].sum()
            .rename("revenue"),
            (-ref["cents"]).groupby([ref["client_id"], month(ref["booking_date"]).rename("month")]).sum()
            .rename("refunds"),
        ], axis=1).fillna(0).reset_index()
        # FIFO settlement: the part of each invoice paid on each day is the overlap of the invoice's range of the
        # client's cumulative invoiced amount with the day's range of its cumulative paid amount
        won = invoices[(invoices["status"] == "won") & (invoices["issue_date"] <= as_of) & (invoices["cents"] > 0)]
        won = won.sort_values(["client_id", "due_date", "issue_date", "invoice_id"])
        won = won.assign(c_end=won.groupby("client_id")["cents"].cumsum())
        won = won.assign(c_start=won["c_end"] - won["cents"])
        daily = pay.groupby(["client_id", "booking_date"])["cents"].sum().reset_index()
        daily = daily[daily["cents"] > 0]
        daily["c_paid"] = daily.groupby("client_id")["cents"].cumsum()
        daily["c_before"] = daily["c_paid"] - daily["cents"]
        totals = daily.groupby("client_id")["c_paid"].max().rename("total_paid")
        day_side = daily[["client_id", "booking_date", "c_paid", "c_before"]].rename(
            columns={"booking_date": "paid_date"}).sort_values("c_paid")
        inv_side = won[["client_id", "due_date", "c_start", "c_end"]].sort_values("c_end")
        final = pd.merge_asof(inv_side, day_side, left_on="c_end", right_on="c_paid", by="client_id",
                              direction="forward")  # the day completing each invoice, if any
        final["total_paid"] = final["client_id"].map(totals).fillna(0)
        final["part"] = final["c_end"] - np.maximum(final["c_start"], np.where(
            final["paid_date"].notna(), final["c_before"], final["total_paid"]))
        inner = pd.merge_asof(day_side, inv_side, left_on="c_paid", right_on="c_end", by="client_id",
                              direction="forward")  # the invoice each day's money ends in
        inner = inner[inner["c_end"].notna() & (inner["c_paid"] < inner["c_end"])]
        inner = inner.assign(part=inner["c_paid"] - np.maximum(inner["c_start"], inner["c_before"]))
        parts = pd.concat([final[["client_id", "due_date", "paid_date", "part"]],
                           inner[["client_id", "due_date", "paid_date", "part"]]], ignore_index=True)
        is_paid = parts["paid_date"].notna()
        write_off = parts["due_date"] + pd.Timedelta(days=180)
        written_off = ~is_paid & (write_off <= as_of)
        parts["last_day"] = parts["paid_date"].where(is_paid, write_off.where(written_off, as_of))
        parts["bad_debt"] = np.where(written_off, parts["part"] / 100, 0.0)
        parts["month"] = month(write_off)
        # each part's cost accrues in the months it is late: cent-days x rate / 36500
        late = parts[(parts["last_day"] > parts["due_date"]) & (parts["part"] > 0)]
        first_day = late["due_date"] + pd.Timedelta(days=1)
        last_day = late["last_day"]
        first_m = (first_day.dt.year * 12 + first_day.dt.month - 1).to_numpy()
        spans = (last_day.dt.year * 12 + last_day.dt.month - 1).to_numpy() - first_m + 1
        late = late.assign(first_day=first_day).iloc[np.repeat(np.arange(len(late)), spans)]
        starts = np.repeat(np.cumsum(spans) - spans, spans)
        index = np.repeat(first_m, spans) + (np.arange(len(late)) - starts)  # months since year 0
        late["month"] = pd.to_datetime(pd.DataFrame({"year": index // 12, "month": index % 12 + 1, "day": 1})
                                       ).to_numpy()
        inside = ((np.minimum(late["last_day"], late["month"] + pd.offsets.MonthEnd(0))
                   - np.maximum(late["first_day"], late["month"])).dt.days + 1)
        accrued = (pd.DataFrame({"client_id": late["client_id"], "month": late["month"],
                                 "cent_days": late["part"].astype("int64") * inside})
                   .groupby(["client_id", "month"])["cent_days"].sum().reset_index())
        settlement = pd.concat([
            pd.DataFrame({"client_id": accrued["client_id"], "month": accrued["month"],
                          "collection_cost": accrued["cent_days"] * 0.1 / 36500, "bad_debt": 0.0}),
            parts.loc[written_off, ["client_id", "month", "bad_debt"]].assign(collection_cost=0.0),
        ]).groupby(["client_id", "month"])[["collection_cost", "bad_debt"]].sum().reset_index()
        rates = managers.set_index("manager_id")["hourly_cost"].astype(float)
        acts = activities[activities["started_at"].dt.normalize() <= as_of]
        tks = tickets[tickets["opened_at"] <= as_of]
        time_cost = pd.concat([
            pd.DataFrame({"client_id": acts["client_id"], "month": month(acts["started_at"]),
                          "communication_cost": acts["duration_minutes"] / 60
                          * acts["manager_id"].map(rates).fillna(50.0), "support_cost": 0.0,
                          "minutes": acts["duration_minutes"]}),
            pd.DataFrame({"client_id": tks["client_id"], "month": month(tks["opened_at"]), "communication_cost": 0.0,
                          "support_cost": tks["minutes_spent"] / 60 * tks["manager_id"].map(rates).fillna(50.0),
                          "minutes": tks["minutes_spent"]}),
        ]).dropna(subset=["client_id"]).groupby(["client_id", "month"]).sum().reset_index()
        cm = pd.concat([money, time_cost, settlement]).groupby(["client_id", "month"]).sum().reset_index()
        margin_rows = invoices[(invoices["status"] == "won") & (invoices["cents"] > 0)]
        sums = margin_rows.groupby("client_id")[["cents", "cost_cents"]].sum()
        margin = ((sums["cents"] - sums["cost_cents"]) / 100) / (sums["cents"] / 100)
        cm["net_revenue"] = cm["revenue"] - cm["refunds"]  # cents
        gross = (cm["net_revenue"] / 100 * cm["client_id"].map(margin).fillna(0.3)).round(2)
        cm["net_profit"] = (gross - cm["communication_cost"].round(2) - cm["support_cost"].round(2)
                            - cm["collection_cost"].round(2) - cm["bad_debt"].round(2))
        window = (cm["month"] >= pd.Timestamp("2025-11-01")) & (cm["month"] <= pd.Timestamp("2026-10-01"))
        card = cm[window].groupby("client_id")["net_revenue"].sum().reset_index()
        card = card.sort_values(["net_revenue", "client_id"], ascending=[False, True])
        positive = card["net_revenue"].clip(lower=0).astype("int64")
        before = positive.cumsum() - positive  # exact: A while the share before is below 80%
        clients_a = int(((card["net_revenue"] > 0) & (before * 5 < positive.sum() * 4)).sum())
    with meter.stage("XYZ, cohorts, retention"):
        first = pay.groupby("client_id")["booking_date"].min()
        cohort_active = int(cm[(cm["revenue"] > 0) & cm["client_id"].isin(first.index)].shape[0])
        months = pd.date_range("2025-11-01", "2026-10-01", freq="MS")
        wide = (cm[window].pivot_table(index="client_id", columns="month", values="net_revenue", aggfunc="sum")
                .reindex(index=first.index, columns=months).fillna(0.0) / 100)
        starts = month(first).clip(lower=months[0])
        observed = pd.DataFrame(np.asarray(months)[None, :] >= starts.to_numpy()[:, None], index=first.index,
                                columns=months)
        values = wide.where(observed)
        mean, sd, count = values.mean(axis=1), values.std(axis=1, ddof=0), observed.sum(axis=1)
        x_clients = int(((count >= 3) & (mean > 0) & (sd / mean <= 0.10)).sum())
        # retention E per month: clients whose last payment day on or before the month end is < 365 days back
        ends = pd.date_range("2023-11-01", "2026-10-01", freq="MS") + pd.offsets.MonthEnd(0)
        days = pay[["client_id", "booking_date"]].drop_duplicates().sort_values("booking_date")
        grid = pd.DataFrame({"client_id": np.repeat(first.index.to_numpy(), len(ends)),
                             "day": np.tile(ends.to_numpy(), len(first))}).sort_values("day")
        last = pd.merge_asof(grid, days, left_on="day", right_on="booking_date", by="client_id",
                             direction="backward")
        retention_e = int(((last["day"] - last["booking_date"]).dt.days < 365).sum())
    result = meter.close()
    from decimal import Decimal

    result["numbers"] = _numbers(rows_staged=len(staged), revenue=Decimal(round(cm["revenue"].sum())) / 100,
                                 refunds=Decimal(round(cm["refunds"].sum())) / 100, net_profit=cm["net_profit"].sum(),
                                 clients=cm.loc[cm["revenue"] > 0, "client_id"].nunique(), clients_a=clients_a,
                                 x_clients=x_clients, cohort_active=cohort_active, retention_e=retention_e)
    return result


# ---- orchestration -------------------------------------------------------------------------------------------

def _child(args: argparse.Namespace) -> None:
    inbox, home = Path(args.inbox), Path(args.home) if args.home else None
    if args.one == "ours":
        result = run_ours(home, inbox)
    elif args.one == "duckdb":
        result = run_duckdb(inbox)
    else:
        result = run_pandas(inbox)
    print(json.dumps(result))


def _spawn(impl: str, inbox: Path, home: Path | None = None, log: Path | None = None,
           max_rss_gb: float | None = None) -> dict:
    """Run one implementation in a fresh process; stop it if its RSS passes ``max_rss_gb`` (a shared machine
    must not run out of memory). A failed or stopped run comes back with ``failed`` set and what it used."""
    import tempfile

    import psutil

    cmd = [sys.executable, "-m", "bench.pipeline", "--one", impl, "--inbox", str(inbox)]
    if home is not None:
        cmd += ["--home", str(home)]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    if log is not None:
        env["BENCH_PROGRESS"] = str(log.with_suffix(".stages.jsonl"))
    start, peak, stopped = time.perf_counter(), 0, None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=root)
        watched = psutil.Process(child.pid)
        while child.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
            if max_rss_gb is not None and peak > max_rss_gb * 1e9 and stopped is None:
                stopped = f"stopped: RSS {peak / 1e9:.1f} GB passed --max-rss-gb {max_rss_gb:g}"
                child.kill()
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    seconds = time.perf_counter() - start
    if stopped or child.returncode:
        reason = stopped or f"exit {child.returncode}: {(stderr.strip().splitlines() or [''])[-1]}"
        if not stopped:
            sys.stderr.write(stderr[-5000:])
        result = {"failed": reason, "seconds": round(seconds, 3), "peak_rss_gb": round(peak / 1e9, 3), "stages": []}
        print(f"  {impl}: FAILED after {seconds:.1f} s at {peak / 1e9:.2f} GB ({reason})", flush=True)
    else:
        result = json.loads(stdout.strip().splitlines()[-1])
        print(f"  {impl}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
    if log is not None:  # every finished run at once, so a long benchmark that is stopped keeps what it measured
        with log.open("a") as fh:
            fh.write(json.dumps({"impl": impl, "inbox": str(inbox), **result}) + "\n")
    return result


def _link_inbox(target: Path, *sources: Path) -> None:
    """A run's inbox: symlinks to the cached files, so the cache is never changed by a run."""
    for source in sources:
        for path in source.rglob("*"):
            if path.is_file():
                link = target / path.relative_to(source)
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(path.resolve())


def _table(title: str, result: dict) -> str:
    months = (f", client_month months computed {result['months_computed'][0]} of {result['months_computed'][1]}"
              if "months_computed" in result else "")
    if "groups_built" in result:  # groups of clients per month: a computed month builds only its changed ones
        months += f" (groups of clients built {result['groups_built'][0]} of {result['groups_built'][1]})"
    lines = [f"{title}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_gb']:.2f} GB{months}",
             f"  {'stage':34} {'seconds':>9} {'peak RSS GB':>12}"]
    lines += [f"  {s['stage']:34} {s['seconds']:>9.2f} {s['peak_rss_gb']:>12.2f}" for s in result["stages"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="run every implementation this many times; "
                                                              "the best (fastest) run of each is reported")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--skip-reference", action="store_true", help="skip the DuckDB reference too (100M)")
    parser.add_argument("--skip-increment", action="store_true", help="skip the one-day increment and CRM-dump runs")
    parser.add_argument("--together", action="store_true",
                        help="one night with the one-day file and the CRM dump together, instead of a night each")
    parser.add_argument("--max-rss-gb", type=float, default=round(_memory_gb() * 0.75, 1),
                        help="stop an implementation whose RSS passes this (default: 75%% of the machine's memory)")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the run homes (warehouse, marts)")
    parser.add_argument("--one", choices=("ours", "duckdb", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--inbox", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _child(args)
        return
    n = args.transactions
    root, counts = cached_inputs(n, args.seed)
    print(f"inputs: {root} ({counts['bank_rows']:,} bank rows + {counts['increment_rows']:,} in the one-day "
          f"increment, {counts['duplicates']:,} re-exported; {counts['invoices']:,} invoices, "
          f"{counts['activities']:,} activities, {counts['tickets']:,} tickets, {counts['clients']:,} clients; "
          f"{counts['bytes'] / 1e9:.2f} GB; generated in {counts['generate_s']} s)")
    if args.generate_only:
        return
    runs: dict[str, list[dict]] = {"ours": [], "increment": [], "crm_dump": [], "together": [], "duckdb": [],
                                   "pandas": []}
    work = OUT / f"run_n{n}"
    log = OUT / f"runs_{n}.jsonl"
    log.unlink(missing_ok=True)
    log.with_suffix(".stages.jsonl").unlink(missing_ok=True)
    for rep in range(args.repeat):
        shutil.rmtree(work, ignore_errors=True)
        inbox, home = work / "inbox", work / "home"
        _link_inbox(inbox, root / "inbox")
        limit = args.max_rss_gb
        runs["ours"].append(_spawn("ours", inbox, home, log, limit))
        if args.together and not args.skip_increment and "failed" not in runs["ours"][-1]:
            _link_inbox(inbox, root / "increment", crm_dump(root))  # the usual night: statements and the CRM export
            runs["together"].append(_spawn("ours", inbox, home, log, limit))
        elif not args.skip_increment and "failed" not in runs["ours"][-1]:
            _link_inbox(inbox, root / "increment")
            runs["increment"].append(_spawn("ours", inbox, home, log, limit))
            if "failed" not in runs["increment"][-1]:  # then the next night brings only a CRM dump
                _link_inbox(inbox, crm_dump(root))
                runs["crm_dump"].append(_spawn("ours", inbox, home, log, limit))
        full_inbox = root / "inbox"
        if not args.skip_reference:
            runs["duckdb"].append(_spawn("duckdb", full_inbox, log=log, max_rss_gb=limit))
        if not args.skip_pandas:
            runs["pandas"].append(_spawn("pandas", full_inbox, log=log, max_rss_gb=limit))
        print(f"run {rep + 1}/{args.repeat}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in runs.items()
                                                          if v), flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    done = {k: [r for r in v if "failed" not in r] for k, v in runs.items()}
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in done.items() if v}
    failed = {k: max(v, key=lambda r: r["seconds"]) for k, v in runs.items() if v and not done[k]}
    print()
    for name, title in (("ours", "ours (pipeline steps, full run)"), ("increment", "ours, one-day increment"),
                        ("crm_dump", "ours, then a CRM dump alone (clients re-exported, one changed)"),
                        ("together", "ours, then the one-day file and the CRM dump in one night"),
                        ("duckdb", "DuckDB SQL reference"), ("pandas", "pandas reference")):
        if name in best:
            print(_table(title, best[name]))
        elif name in failed:
            print(f"{title}: FAILED after {failed[name]['seconds']:.1f} s at {failed[name]['peak_rss_gb']:.2f} GB "
                  f"({failed[name]['failed']})")
    impls = [k for k in ("ours", "duckdb", "pandas") if k in best]
    mismatches = []
    if impls:
        print("\nkey numbers (full run):")
        print(f"  {'':14}" + "".join(f"{k:>20}" for k in impls))
        for key in best[impls[0]]["numbers"]:
            values = [best[k]["numbers"][key] for k in impls]
            print(f"  {key:14}" + "".join(f"{v!s:>20}" for v in values))
            if key == "net_profit":  # float time and lateness costs, rounded per client-month: cents apart is fine
                base = float(values[0])
                if any(abs(float(v) - base) > max(1.0, abs(base) * 1e-7) for v in values):
                    mismatches.append(key)
            elif len(set(values)) > 1:
                mismatches.append(key)
    # a stopped run of ours still bounds the ratios: it would have taken at least that long
    ours = best.get("ours") or failed["ours"]
    ours_s, bound = ours["seconds"], "" if "ours" in best else " (lower bound: ours did not finish)"
    checks = []
    if "increment" in best:
        inc_s = best["increment"]["seconds"]
        checks.append(("increment / full run", inc_s / ours_s, "<= 0.05", inc_s / ours_s <= 0.05))
    if "together" in best:  # the nightly increment of a company whose CRM exports every night
        together_s = best["together"]["seconds"]
        checks.append(("bank + CRM night / full run", together_s / ours_s, "<= 0.05", together_s / ours_s <= 0.05))
    if "crm_dump" in best:  # no target of its own: the nightly increment when the CRM exports every night
        dump_s = best["crm_dump"]["seconds"]
        checks.append(("CRM-dump night / full run", dump_s / ours_s, "(none)", None))
    if "duckdb" in best:
        ratio = ours_s / best["duckdb"]["seconds"]
        checks.insert(0, ("ours / DuckDB reference" + bound, ratio, "<= 1.5", ratio <= 1.5 and not bound))
    if "pandas" in best:
        speedup = best["pandas"]["seconds"] / ours_s
        checks.insert(1, ("pandas / ours (speed-up)" + bound, speedup, ">= 10", speedup >= 10 and not bound))
    if "pandas" in best and "duckdb" in best:
        # 10x faster than pandas means ours <= pandas / 10: below 10 here, that is faster than the bare DuckDB
        # reference, which computes the same marts without parsing statements, a raw layer, gates or publishing
        spread = best["pandas"]["seconds"] / best["duckdb"]["seconds"]
        checks.insert(2, ("pandas / DuckDB reference", spread, ">= 10 (see above)", None))
    at_scale = n >= 100_000_000  # the memory target is for 100M: a smaller run's peak is no verdict on it
    checks.append(("peak RSS GB (ours)" + bound, ours["peak_rss_gb"], "< 24 (at 100M)" if at_scale else "(100M only)",
                   (ours["peak_rss_gb"] < 24 and not bound) if at_scale else None))
    print("\ntargets (the issue states them for 10M; increment and memory for 100M; with 'pandas / DuckDB "
          "reference' at r < 10, 10x faster than pandas means ours in r/10 of the bare DuckDB reference's time):")
    for name, value, target, ok in checks:
        print(f"  {name:28} {value:8.2f}   target {target:16} {'' if ok is None else 'PASS' if ok else 'FAIL'}")
    result = {"transactions": n, "seed": args.seed, "repeat": args.repeat, "date": dt.date.today().isoformat(),
              "machine": {"cores": os.cpu_count(), "memory_gb": round(_memory_gb(), 1)}, "inputs": counts,
              "best": best, "failed": failed, "runs": runs,
              "checks": [{"name": c[0], "value": round(c[1], 4), "target": c[2], "pass": c[3]} for c in checks],
              "numbers_agree": not mismatches}
    path = OUT / f"result_{n}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwritten {path}")
    if mismatches:
        raise SystemExit(f"the implementations disagree on: {', '.join(mismatches)}")


def _memory_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 1e9


if __name__ == "__main__":
    main()
