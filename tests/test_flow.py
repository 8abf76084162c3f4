"""End to end through real Prefect flow runs (one ephemeral API for the whole session).

One small demo home is built once; tests that break things work on copies of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import os
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from clientbase.demo import DemoSpec, generate
from clientbase.errors import GateFailed, LockedError, UnknownFormatError
from flows import steps
from transforms import identity
from transforms.marts import MARTS
from warehouse.db import home_lock

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_api")]

SPEC = DemoSpec(clients=60, months=14, seed=7)


def client_month_schema():
    from transforms.marts import client_month

    return client_month.SCHEMA


def run(home: Path, **kwargs):
    from flows.pipeline import nightly

    return nightly(home=str(home), as_of=SPEC.end, **kwargs)


def mart_digest(home: Path, mart: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((home / "marts" / mart).glob("*.parquet"))}


def query(home: Path, sql: str, database: str = "warehouse.duckdb"):
    """Read-only, with relative paths (the marts views) resolved against HOME, as in a BI tool's setup."""
    con = duckdb.connect(str(home / database), read_only=True, config={"file_search_path": str(home)})
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("demo-home")
    generate(home / "inbox", SPEC)
    summary = run(home, command="demo")
    return home, summary


def copy_home(home: Path, tmp_path: Path) -> Path:
    target = tmp_path / "home"
    shutil.copytree(home, target, symlinks=True)
    return target


def test_demo_publishes_marts_views_and_report(home):
    home, summary = home
    files = sorted(p for p in (home / "inbox").rglob("*") if p.is_file())
    assert summary["files_new"] == len(files)
    assert summary["rows_quarantined"] == 0
    assert summary["gates"] == {"raw": "passed", "staged": "passed", "marts": "passed"}
    assert (home / "marts").is_symlink()
    assert Path(summary["report"]).is_file()
    report = Path(summary["report"]).read_text()
    assert "Client base as of" in report
    assert "revenue from the top 20% of clients" in report  # the configured top_share (default 0.20)
    # the GX Data Docs of each gate, linked from the report relative to it
    for gate in ("raw", "staged", "marts"):
        assert f'href="../data_quality/{gate}/index.html"' in report
        assert (Path(summary["report"]).parent / f"../data_quality/{gate}/index.html").is_file()

    months = len(list((home / "marts" / "client_month").glob("month=*.parquet")))
    assert months == SPEC.months
    # the published view, the parquet files and staging agree to the cent
    (view_total,), = query(home, "SELECT sum(revenue) FROM marts.client_month")
    parquet_total = pl.read_parquet(home / "marts" / "client_month" / "*.parquet")["revenue"].sum()
    (staged_total,), = query(home, "SELECT sum(amount_reporting) FROM staging.bank_transaction "
                                   "WHERE category = 'client_payment' AND status = 'BOOK'")
    assert view_total == parquet_total == staged_total > 0
    # the data dictionary as a table beside the views, for BI tools
    (described,), = query(home, "SELECT count(*) FROM marts.catalog WHERE mart = 'client_month'")
    assert described == len(client_month_schema())
    (status, files_new, gates), = query(home, "SELECT status, files_new, gates FROM ops.run_log")
    assert (status, files_new) == ("published", len(files))
    assert gates == '{"raw": "passed", "staged": "passed", "marts": "passed"}'
    # the walk-in payers the generator keeps out of the CRM are listed for a person to map
    unmatched = pl.read_parquet(home / "marts" / "unmatched_counterparties" / "*.parquet")
    assert unmatched.height >= 1
    assert unmatched["names_seen"].str.contains("Einzelhandel").all()
    assert set(unmatched["status"]) == {"unmatched"}
    (matched,), = query(home, "SELECT count(*) FROM staging.client_match WHERE method IN ('tax_id', 'account')")
    assert matched >= 40
    log = pl.read_parquet(home / "marts" / "run_log" / "*.parquet")
    assert log.select("status", "published_version").rows() == [("published", summary["run_id"])]


def test_views_use_relative_paths_and_follow_a_moved_home(home, tmp_path, monkeypatch):
    """Both DuckDB files open anywhere the home is, from a client started in HOME (or with file_search_path);
    the BI catalog file holds only the views and the data dictionary."""
    home, _ = home
    moved = copy_home(home, tmp_path)
    expected = pl.read_parquet(home / "marts" / "client_month" / "*.parquet")["revenue"].sum()
    monkeypatch.chdir(moved)
    for database in ("warehouse.duckdb", "bi.duckdb"):
        con = duckdb.connect(database, read_only=True)
        try:
            (total,), = con.execute("SELECT sum(revenue) FROM marts.client_month").fetchall()
            sql, = (r[0] for r in con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'client_month'")
                    .fetchall())
            tables = {r[0] for r in con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()")
                      .fetchall()}
        finally:
            con.close()
        assert total == expected
        assert "'marts/client_month/*.parquet'" in sql and str(home) not in sql
        if database == "bi.duckdb":
            assert tables == {"marts.catalog"}


def test_marts_carry_no_contact_pii(home, tmp_path):
    """CRM exports come with contact people, e-mails and phones (and our managers' names): none of it may
    reach a mart; client names are company names."""
    home, _ = home
    work = copy_home(home, tmp_path)
    crm = work / "inbox" / "crm"
    clients = pl.read_csv(crm / "clients.csv", infer_schema=False)
    n = clients.height
    people = [f"Erika Musterfrau{i}" for i in range(n)]
    phones = [f"+49 30 9018{i:04d}" for i in range(n)]
    emails = [f"erika.musterfrau{i}@example.org" for i in range(n)]
    clients.with_columns(contact_person=pl.Series(people), email=pl.Series(emails), phone=pl.Series(phones)) \
        .write_csv(crm / "clients.csv")
    run(work)
    managers = pl.read_csv(crm / "managers.csv")["name"].to_list()
    assert mart_strings(work, lambda v: v.str.contains(r"[\w.+-]+@[\w-]+\.[\w.]+")
                        | v.is_in(people + phones + managers) | v.str.contains("Musterfrau", literal=True)) == []
    # the contact data did arrive (kept in raw, where it came from) — the test would be empty otherwise
    (kept,), = query(work, "SELECT count(*) FROM raw.crm_clients WHERE extra::VARCHAR LIKE '%Musterfrau%'")
    assert kept == n


def mart_strings(home: Path, matches) -> list[str]:
    """'mart.column: value' for the first three string values of each mart column that ``matches`` (an expression
    of the values)."""
    found = []
    for mart in MARTS:
        frame = pl.read_parquet(home / "marts" / mart.NAME / "*.parquet")
        for column, dtype in frame.schema.items():
            if dtype == pl.String:
                values = frame[column].drop_nulls()
                found += [f"{mart.NAME}.{column}: {v}" for v in values.filter(matches(values)).head(3)]
    return found


def test_a_real_flow_run_was_recorded_by_prefect(home):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert any(r.state is not None and r.state.is_completed() for r in runs)


def staging_parts(home: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(home)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (home / "staging").glob("*/*.parquet")}


def test_second_run_ingests_nothing_and_gives_identical_marts(home, tmp_path):
    home, _ = home
    work = copy_home(home, tmp_path)
    every_mart = [mart.NAME for mart in MARTS if mart.NAME != "run_log"]  # the log remembers both runs
    before = {name: mart_digest(work, name) for name in every_mart}
    staged = staging_parts(work)
    summary = run(work)
    assert summary["files_new"] == 0
    # nothing staging depends on changed: the staging files were kept, not rebuilt (test_failed_gate_publishes_
    # nothing shows a changed FX rates file restaging)
    assert staging_parts(work) == staged
    assert len(staged) == len(steps.STAGING_TABLES) == 9
    # byte for byte, every file of every mart (float shares come from exact sums, not row-order-dependent ones)
    assert {name: mart_digest(work, name) for name in every_mart} == before
    assert [r[0] for r in query(work, "SELECT status FROM ops.run_log ORDER BY started_at")] == ["published"] * 2


def test_the_thresholds_in_the_config_reach_the_marts_and_the_report(home, tmp_path):
    """DOMAIN's thresholds are defaults: a config file changes what the as-of marts say (staging is kept)."""
    home, _ = home
    work = copy_home(home, tmp_path)
    before = pl.read_parquet(work / "marts" / "client_scorecard" / "*.parquet")
    staged = staging_parts(work)
    (work / "inbox" / "config.yaml").write_text(
        "economics:\n  top_share: 0.3\n  pareto_reach: 0.5\n"
        "behaviour:\n  at_risk_factor: 3\n  regular_months: 1\n  regular_window_months: 1\n", encoding="utf-8")
    summary = run(work)
    assert staging_parts(work) == staged  # mart thresholds: nothing to restage
    pareto = pl.read_parquet(work / "marts" / "pareto_summary" / "*.parquet")
    assert pareto.select("top_fraction", "reach").unique().rows() == [(0.3, 0.5)]
    assert "revenue from the top 30% of clients" in Path(summary["report"]).read_text()
    card = pl.read_parquet(work / "marts" / "client_scorecard" / "*.parquet")
    assert card["is_at_risk"].sum() < before["is_at_risk"].sum()  # silent 3 x the usual gap: fewer
    # regular = bought in the as-of month itself
    assert card.filter(pl.col("ladder_stage") == "regular").height != before.filter(
        pl.col("ladder_stage") == "regular").height


def test_backfill_equals_full_rebuild_for_its_months(home, tmp_path):
    from flows.pipeline import backfill

    home, _ = home
    work = copy_home(home, tmp_path)
    before = mart_digest(work, "client_month")
    summary = backfill(home=str(work), start="2026-03", end="2026-04")
    assert summary["command"] == "backfill" and summary["as_of"] == SPEC.end.isoformat()
    assert summary["rows_marts"]["client_month"] > 0
    assert mart_digest(work, "client_month") == before  # same months, same bytes; others carried over


def test_failed_gate_publishes_nothing(home, tmp_path):
    home, _ = home
    work = copy_home(home, tmp_path)
    published = os.readlink(work / "marts")
    before = mart_digest(work, "client_month")
    # a USD client payment with no FX rate: the staged gate must stop the run, naming the currency
    (work / "inbox" / "bank" / "usd.csv").write_text(
        "account,booking_date,amount,currency,counterparty_name\n"
        "US12345,2026-10-02,100.00,USD,Acme Inc\n", encoding="utf-8")
    with pytest.raises(GateFailed) as err:
        run(work)
    assert err.value.gate == "staged"
    assert f"no FX rate to EUR for USD on 2026-10-02 (1 client transactions); add them to {work / 'inbox' / 'fx_rates.csv'}" in str(err.value)
    assert os.readlink(work / "marts") == published
    assert mart_digest(work, "client_month") == before
    (status, gates), = query(work, "SELECT status, gates FROM ops.run_log ORDER BY started_at DESC LIMIT 1")
    assert (status, gates) == ("gate_failed", '{"raw": "passed", "staged": "failed"}')
    failed = query(work, "SELECT dataset, column_name FROM ops.dq_results WHERE NOT success")
    assert ("staging.bank_transaction", "amount_reporting") in failed
    versions = sorted(p.name for p in (work / ".marts_versions").iterdir())
    assert versions == [published.split("/")[-1]]  # the unpublished version was discarded
    # the Data Docs of the failing gate are there to look at, marking the failed validation
    staged_docs = (work / "reports" / "data_quality" / "staged" / "index.html").read_text()
    assert "staged.staging.bank_transaction" in staged_docs and "'Failed'" in staged_docs

    # the fix the message asks for: a rate file; the next run converts and publishes
    (work / "inbox" / "fx_rates.csv").write_text("date,currency,rate\n2026-09-30,USD,0.92\n")
    summary = run(work)
    assert summary["gates"]["staged"] == "passed" and summary["files_new"] == 0  # already in raw
    assert query(work, "SELECT amount_reporting, fx_rate FROM staging.bank_transaction WHERE currency = 'USD'") == [
        (Decimal("92.00"), Decimal("0.92000000"))]
    unmatched = pl.read_parquet(work / "marts" / "unmatched_counterparties" / "*.parquet")
    acme = unmatched.filter(pl.col("counterparty_key") == identity.name_digest("acme")).row(0, named=True)
    assert (acme["status"], acme["total_amount"], acme["names_seen"]) == ("unmatched", Decimal("92.00"), "Acme Inc")


def test_unreadable_file_stops_with_its_path(home, tmp_path):
    home, _ = home
    work = copy_home(home, tmp_path)
    before = mart_digest(work, "client_month")
    junk = work / "inbox" / "bank" / "statement.pdf"
    junk.write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    with pytest.raises(UnknownFormatError) as err:
        run(work)
    assert str(err.value).startswith(f"{junk}: unrecognised bank file format")
    assert mart_digest(work, "client_month") == before
    (status,), = query(work, "SELECT status FROM ops.run_log ORDER BY started_at DESC LIMIT 1")
    assert status == "failed"


def test_second_run_on_a_locked_home_exits_clearly(home, tmp_path):
    home, _ = home
    work = copy_home(home, tmp_path)
    with home_lock(work), pytest.raises(LockedError, match="another clientbase run"):
        run(work)


def test_report_failure_after_publish_keeps_the_published_marts(home, tmp_path, monkeypatch):
    from prefect import task

    import flows.pipeline as pipeline

    @task
    def broken_report(*args, **kwargs):
        raise RuntimeError("disk full")

    home, _ = home
    work = copy_home(home, tmp_path)
    monkeypatch.setattr(pipeline, "report", broken_report)
    with pytest.raises(RuntimeError, match="disk full"):
        run(work)
    (status, version, error), = query(work, "SELECT status, published_version, error FROM ops.run_log "
                                            "ORDER BY started_at DESC LIMIT 1")
    assert (status, error) == ("published", "RuntimeError: disk full")
    assert os.readlink(work / "marts").endswith(version)
    assert (work / ".marts_versions" / version / "client_month").is_dir()


def test_bank_only_mode_end_to_end(home, tmp_path):
    """No CRM at all: counterparties are the clients, and the marts still publish."""
    home, _ = home
    bank_only = tmp_path / "bank-only"
    shutil.copytree(home / "inbox" / "bank", bank_only / "inbox" / "bank")
    # a private person and a sole trader pay too: their names are personal data and stay out of the marts
    (bank_only / "inbox" / "bank" / "private-2026-05.csv").write_text(
        "account,booking_date,amount,currency,counterparty_name\n"
        "DE89370400440532013000,2026-05-11,80.00,EUR,Erika Musterfrau\n"
        "DE89370400440532013000,2026-05-12,95.00,EUR,ИП Мустерманн Макс\n", encoding="utf-8")
    summary = run(bank_only)
    assert summary["gates"] == {"raw": "passed", "staged": "passed", "marts": "passed"}
    months = pl.read_parquet(bank_only / "marts" / "client_month" / "*.parquet")
    assert months["client_id"].str.starts_with("bank:").all()
    # the same money as with the CRM (and the two payers): identity changes who, not how much
    with_crm = pl.read_parquet(home / "marts" / "client_month" / "*.parquet")
    assert months["revenue"].sum() == with_crm["revenue"].sum() + Decimal("175.00")
    assert mart_strings(bank_only, lambda v: v.str.contains("(?i)muster|мустер")) == []
    report = Path(summary["report"]).read_text(encoding="utf-8")
    assert "Muster" not in report and "Мустер" not in report
    scorecard = pl.read_parquet(bank_only / "marts" / "client_scorecard" / "*.parquet")
    people = [identity.name_digest(n) for n in ("erika musterfrau", "мустерманн макс")]
    assert scorecard.filter(pl.col("client_id").is_in([f"bank:{k}" for k in people]))["name"].to_list() == [None, None]
    # the companies keep their names: every demo client's name carries its legal form (a German sole trader's
    # e.K. is its firm in the commercial register)
    payers = (pl.read_parquet(bank_only / "staging" / "bank_transaction" / "*.parquet")
              .filter(pl.col("category") == "client_payment").group_by("client_id")
              .agg(person=pl.col("counterparty_name").str.contains("Muster|Мустер").all()))
    named = scorecard.join(payers, on="client_id").select("name", "person", company=pl.col("name").is_not_null())
    assert named["company"].to_list() == (~named["person"]).to_list()
    assert named["person"].sum() == 2
    assert named.filter("company")["name"].str.contains(r"(?i)gmbh|\bag\b|\bkg\b|b\.v\.|sp\. z o\.o\.|\buab\b|e\.k\.").all()
    biggest = scorecard.sort("net_revenue", descending=True)["name"][0]
    assert biggest is not None and html.escape(biggest) in report  # the report names companies as before
    assert pl.read_parquet(bank_only / "marts" / "unmatched_counterparties" / "*.parquet").height == 0
    # salaries, tax office, suppliers and bank fees never paid us: they are not clients
    (clients,), = query(bank_only, "SELECT count(*) FROM staging.client WHERE name ILIKE '%Finanzamt%' "
                                   "OR name ILIKE '%Gehalt%' OR name ILIKE '%Metallwerke%'")
    assert clients == 0


def test_the_report_marks_a_client_without_a_company_name():
    from clientbase.report import _client_name

    assert _client_name("Müller & Söhne GmbH") == "Müller &amp; Söhne GmbH"
    assert _client_name(None).startswith('<span class="none" title="no company name on record') and "—" in _client_name(None)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(home, tmp_path):
    """The report opens offline in a real browser without console errors and shows its charts; the screenshot
    is kept as a test artifact (test-artifacts/report.png)."""
    import subprocess

    home, summary = home
    report = Path(summary["report"])
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "error" in line.lower()]
    assert console_errors == []
    assert dom.stdout.count("<svg") >= 6  # Pareto, whale, ABC-XYZ, cohorts, CRR, ladder
    for heading in ("Pareto curve", "Whale curve", "ABC-XYZ", "Cohort retention", "Loyalty ladder",
                    "Unprofitable clients", "Segments"):
        assert heading in dom.stdout
    artifacts = Path(__file__).parent.parent / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = subprocess.run([CHROMIUM, *flags, "--window-size=1100,5600", f"--screenshot={artifacts / 'report.png'}",
                           report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and (artifacts / "report.png").stat().st_size > 50_000


def all_marts_digest(home: Path) -> dict[str, dict[str, str]]:
    """sha256 of every parquet file of every mart but run_log (run ids and times)."""
    return {folder.name: {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.parquet"))}
            for folder in sorted((home / "marts").iterdir())
            if folder.is_dir() and not folder.name.startswith("_") and folder.name != "run_log"}


def computed_of(caplog, mart: str) -> tuple[int, int]:
    """(computed, all) periods or months of the last build of a mart that carries rows over, from its log line."""
    import re

    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{mart}:")][-1]
    computed, total = re.match(rf"{mart}: (\d+) of (\d+) \w+ computed", line).groups()
    return int(computed), int(total)


def test_one_new_day_recomputes_only_its_month_and_equals_a_full_rebuild(home, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="clientbase")
    home, _ = home
    work = copy_home(home, tmp_path)
    months = sorted(p.name for p in (work / "marts" / "client_month").glob("month=*.parquet"))
    # nothing new: every month's inputs have their published fingerprint, every file is carried over (linked)
    again = run(work)
    assert again["months"]["computed"] == [] and len(again["months"]["carried"]) == SPEC.months
    periods = pl.read_parquet(work / "marts" / "retention_period" / "*.parquet")
    assert computed_of(caplog, "retention_period") == (0, periods.height)  # every period's row carried over too
    ladder_months = pl.read_parquet(work / "marts" / "ladder_transitions" / "*.parquet")["month"].n_unique()
    assert computed_of(caplog, "ladder_transitions") == (0, ladder_months)  # and every month's ladder moves
    previous = work / ".marts_versions" / home.joinpath("marts").readlink().name / "client_month"
    assert all((work / "marts" / "client_month" / name).samefile(previous / name) for name in months)
    assert not (work / ".work" / again["run_id"]).exists()  # the run's scratch partitions are gone

    # one day's statement arrives late, for June: a walk-in payer (no invoices, so no FIFO settlement moves)
    (work / "inbox" / "bank" / "day-2026-06-15.csv").write_text(
        "account,booking_date,amount,currency,counterparty_name\n"
        "DE89370400440532013000,2026-06-15,1234.56,EUR,Zeitungskiosk Lindner\n", encoding="utf-8")
    summary = run(work)
    assert summary["files_new"] == 1
    # its rows were staged against the staged ones and appended as a second part, not restaged from scratch
    assert len(list((work / "staging" / "bank_transaction").glob("part-*.parquet"))) == 2
    assert summary["months"]["computed"] == ["2026-06-01"]
    assert len(summary["months"]["carried"]) == SPEC.months - 1 and "2026-06-01" not in summary["months"]["carried"]
    # of June's groups of clients only the new payer's was built, the others' rows taken from the published file
    june_groups = json.loads((work / "marts" / "_fingerprints" / "client_month.json").read_text())["month=2026-06-01.parquet"]
    assert summary["months"]["groups"] == {"built": 1, "reused": len(june_groups) - 1} and len(june_groups) > 10
    june = pl.read_parquet(work / "marts" / "client_month" / "month=2026-06-01.parquet")
    assert june.filter(pl.col("revenue") == Decimal("1234.56"))["client_id"].to_list() == ["bank:" + identity.name_digest("zeitungskiosk lindner")]
    # the retention periods ending before June read no June payment: carried over; the others computed
    june_on = periods.filter(pl.col("period_end") >= dt.date(2026, 6, 1)).height
    assert 0 < june_on < periods.height and computed_of(caplog, "retention_period") == (june_on, periods.height)
    # the ladder moves of the months before June likewise; June's and later ones computed
    moves = pl.read_parquet(work / "marts" / "ladder_transitions" / "*.parquet")
    assert computed_of(caplog, "ladder_transitions") == (
        moves.filter(pl.col("month") >= dt.date(2026, 6, 1))["month"].n_unique(), ladder_months)

    # the same inbox from scratch: every mart file is the same
    rebuild = tmp_path / "rebuild"
    shutil.copytree(work / "inbox", rebuild / "inbox")
    full = run(rebuild)
    assert len(full["months"]["computed"]) == SPEC.months
    assert all_marts_digest(work) == all_marts_digest(rebuild)
    assert len(all_marts_digest(work)["client_month"]) == SPEC.months


def test_a_payer_taken_back_leaves_its_group_of_clients_and_the_month_returns_to_its_bytes(home, tmp_path):
    """A late statement brings a new payer into June, in a group of clients June had no rows of; the file is then
    taken back (retracted). June is rebuilt from its other groups' published rows alone (the vanished group's rows
    are not taken over) and every client_month file is again the one the first run wrote, byte for byte."""
    from clientbase.config import load_settings
    from transforms.marts import client_month

    home, _ = home
    work = copy_home(home, tmp_path)
    june_file = work / "marts" / "client_month" / "month=2026-06-01.parquet"
    june_groups = set(pl.read_parquet(june_file).select(client_month.client_group())["client_id"].to_list())
    for n in range(200):  # a payer whose group has no client in June yet
        name = f"Zeitungskiosk {'abcdefghijklmnopqrstuvwxyz'[n % 26]}{'abcdefghij'[n // 26]}"
        normalised = pl.select(identity.normalise_company_name(pl.lit(name))).item()
        client = "bank:" + identity.name_digest(normalised)
        if pl.DataFrame({"client_id": [client]}).select(client_month.client_group()).item() not in june_groups:
            break
    statement = work / "inbox" / "bank" / "day-2026-06-16.csv"
    statement.write_text("account,booking_date,amount,currency,counterparty_name\n"
                         f"DE89370400440532013000,2026-06-16,99.90,EUR,{name}\n", encoding="utf-8")
    added = run(work)
    assert added["months"]["computed"] == ["2026-06-01"]
    assert added["months"]["groups"] == {"built": 1, "reused": len(june_groups)}
    june = pl.read_parquet(june_file)
    assert june.filter(pl.col("client_id") == client)["revenue"].to_list() == [Decimal("99.90")]

    statement.unlink()
    assert [path for path, _ in steps.retract_files(load_settings(work), ["bank/day-2026-06-16.csv"])] == [
        "bank/day-2026-06-16.csv"]
    taken_back = run(work)
    assert taken_back["months"]["computed"] == ["2026-06-01"]
    assert taken_back["months"]["groups"] == {"built": 0, "reused": len(june_groups)}
    assert client not in pl.read_parquet(june_file)["client_id"].to_list()
    assert mart_digest(work, "client_month") == mart_digest(home, "client_month")


def test_a_month_built_in_part_refuses_a_process_that_groups_clients_otherwise(tmp_path):
    """The published rows of a month are taken over by group of clients, the groups a hash of the id: a worker
    whose polars hashes differently (another build on a Dask worker) would take over the wrong rows, so it stops."""
    from clientbase.config import load_settings
    from clientbase.errors import ClientbaseError
    from transforms.marts import client_month

    job = steps.MonthJob(month="2026-06-01", inputs=str(tmp_path / "inputs"), fingerprint={"3": "f", "7": "g"},
                         previous_file=str(tmp_path / "month=2026-06-01.parquet"), reused=(7,),
                         hash_probe=client_month.hash_probe() ^ 1)
    with pytest.raises(ClientbaseError, match="puts clients in other groups than the process that cut"):
        steps.build_client_month(load_settings(tmp_path), job, str(tmp_path / "version"))
    assert not (tmp_path / "version" / "client_month" / "month=2026-06-01.parquet").exists()


def test_a_night_that_only_moves_as_of_recomputes_only_the_as_of_month(home, tmp_path):
    """Invoices still open accrue their financing cost one more day each night; the months before as-of keep
    their exact figures, so their files are carried over (they were all recomputed while a month's cost was
    taken as a share of the invoice's whole cost, which moved in its last bits every night)."""
    from flows.pipeline import nightly

    home, _ = home
    work = copy_home(home, tmp_path)
    first = nightly(home=str(work), as_of=dt.date(2026, 10, 20))
    card = pl.read_parquet(work / "marts" / "client_scorecard" / "*.parquet")
    assert card["overdue_amount"].sum() > 0  # open invoices that are late: their cost grows every night
    assert "2026-10-01" in first["months"]["computed"]
    nxt = nightly(home=str(work), as_of=dt.date(2026, 10, 21))
    assert nxt["months"]["computed"] == ["2026-10-01"]
    assert len(nxt["months"]["carried"]) == SPEC.months - 1


def test_the_marts_gate_checks_the_computed_months_and_reconciles_every_month(home, tmp_path, monkeypatch):
    """Carried-over client_month files passed this gate when they were published (same suite: it is in the month
    fingerprint); the gate checks the months a run computed, and reconciles revenue over all of them."""
    from clientbase.config import load_settings
    from expectations.gate import run_gate

    home, _ = home
    work = copy_home(home, tmp_path)
    version = (work / "marts").resolve()
    months = sorted(p.name for p in (version / "client_month").glob("*.parquet"))
    settings = load_settings(work, as_of=SPEC.end)
    seen = {}

    def spy(gate, run_id, datasets, suite, **kwargs):
        seen.update(datasets)
        return run_gate(gate, run_id, datasets, suite, **kwargs)

    monkeypatch.setattr(steps, "run_gate", spy)
    assert steps.gate_marts(settings, "t1", str(version), SPEC.end, carried=months[:-1]).passed
    assert [name for name in months if name in seen["client_month"]] == months[-1:]
    reconciled = seen["revenue_reconciliation"]  # every month, from every file: carried over ones too
    assert [f"month={m}.parquet" for m in reconciled["month"]] == months
    assert reconciled["diff"].to_list() == [0] * len(months) and reconciled["mart_revenue"].min() > 0
    # a month this run computed is checked row by row: a negative revenue in it stops the gate
    last = version / "client_month" / months[-1]
    frame = pl.read_parquet(last)
    last.unlink()  # a hard link to the published file: replace, never write through it
    frame.with_columns(pl.col("revenue") * -1).write_parquet(last)
    with pytest.raises(GateFailed, match="client_month"):
        steps.gate_marts(settings, "t2", str(version), SPEC.end, carried=months[:-1])
    # with every month carried over (an increment that touched none) there is nothing to check row by row
    seen.clear()
    with pytest.raises(GateFailed, match="revenue_reconciliation"):  # the changed file still fails to reconcile
        steps.gate_marts(settings, "t3", str(version), SPEC.end, carried=months)
    assert not any(name in str(seen["client_month"]) for name in months)


def test_an_amount_too_large_to_report_stops_the_staged_gate(home, tmp_path):
    """Raw holds 18 digits before the point, reporting amounts 16: a larger amount stays unconverted and the staged
    gate names its file and record (a polars cast error before)."""
    home, _ = home
    work = copy_home(home, tmp_path)
    published = os.readlink(work / "marts")
    (work / "inbox" / "bank" / "broken.csv").write_text(
        "account,booking_date,amount,currency,counterparty_name\n"
        "US12345,2026-10-02,100.00,EUR,Acme Inc\n"
        "US12345,2026-10-03,123456789012345678.00,EUR,Acme Inc\n", encoding="utf-8")
    with pytest.raises(GateFailed) as err:
        run(work)
    assert err.value.gate == "staged"
    assert ("bank/broken.csv, record 2, amount: 123456789012345678 EUR is more than EUR amounts hold (16 digits "
            "before the point) once converted") in str(err.value)
    assert "no FX rate" not in str(err.value)
    assert os.readlink(work / "marts") == published
    failed = dict(query(work, "SELECT check_name, observed FROM ops.dq_results WHERE NOT success"))
    assert failed["expect_amount_reporting_to_fit_money"] == (
        '{"unexpected_count": 1, "examples": ["bank/broken.csv record 2: 123456789012345678.00000 EUR"]}')
