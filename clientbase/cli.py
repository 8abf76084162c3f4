"""The ``clientbase`` command: demo, run, backfill, retract, export, docs.

Runs without any Prefect server: flows start Prefect's ephemeral API in-process. Errors the user can fix are
printed as one line naming the file/key, with a non-zero exit code; previous marts are never touched.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Nightly client-base economics from bank statements and CRM dumps.")

DEFAULT_HOME = Path("clientbase-home")


def prefect_defaults() -> None:
    """Settings that make the ephemeral Prefect API usable on small machines and offline."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def _fail(exc: Exception) -> None:
    from clientbase.errors import ClientbaseError

    code = exc.exit_code if isinstance(exc, ClientbaseError) else 1
    typer.echo(f"clientbase: error: {exc}", err=True)
    raise typer.Exit(code)


def _print_summary(summary: dict) -> None:
    typer.echo(f"run {summary['run_id']} ({summary['command']}, as of {summary['as_of']}): published")
    typer.echo(f"  marts:  {summary['marts_dir']}  rows: {summary.get('rows_marts')}")
    typer.echo(f"  report: {summary.get('report')}")
    typer.echo(f"  new files: {summary.get('files_new')}, raw rows: {summary.get('rows_raw')}, "
               f"quarantined: {summary.get('rows_quarantined')}, staged: {summary.get('rows_staged')}, "
               f"duplicates: {summary.get('duplicates')}")
    months = summary.get("months") or {}
    typer.echo(f"  client_month: {len(months.get('computed', []))} month(s) computed, "
               f"{len(months.get('carried', []))} carried over unchanged, on {len(months.get('workers', []))} "
               "worker process(es)")


def precheck_inbox(inbox: Path) -> None:
    """The cheap inbox checks (exists, not empty), so a typo fails in a second, not after Prefect starts."""
    from flows.steps import INBOX_KINDS, inbox_files

    inbox_files(inbox, INBOX_KINDS)


TaskRunnerOption = Annotated[str | None, typer.Option(
    "--task-runner", help="Where the per-month tasks run: threads (this process) or dask (default: the config's "
                          "execution.task_runner, else threads).")]
DaskAddressOption = Annotated[str | None, typer.Option(
    help="Scheduler of an existing Dask cluster, e.g. tcp://scheduler:8786 (implies --task-runner dask).")]
WorkersOption = Annotated[int | None, typer.Option(help="Threads, or local Dask worker processes (default 2).")]


def execution_settings(settings, task_runner: str | None, dask_address: str | None, workers: int | None):
    """The config's ``execution:`` with the command-line options on top (validated the same way)."""
    from pydantic import ValidationError

    from clientbase.config import ExecutionConfig
    from clientbase.errors import ConfigError

    overrides = {"task_runner": task_runner or ("dask" if dask_address else None), "dask_address": dask_address,
                 "workers": workers}
    try:
        return ExecutionConfig(**{**settings.execution.model_dump(),
                                  **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'execution'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid execution options: {reasons}") from None


def _run(home: Path, inbox: Path | None, as_of: dt.date | None, config: Path | None, command: str,
         task_runner: str | None = None, dask_address: str | None = None, workers: int | None = None) -> None:
    from clientbase.config import load_settings
    from clientbase.errors import ClientbaseError

    try:
        settings = load_settings(home, inbox=inbox, as_of=as_of, config_file=config)
        execution = execution_settings(settings, task_runner, dask_address, workers)
        precheck_inbox(settings.inbox_dir)  # fail fast, before the Prefect API starts
        from flows.pipeline import nightly, run_with_execution

        summary = run_with_execution(nightly, execution, home=str(home.absolute()),
                                     inbox=str(inbox.absolute()) if inbox else None, as_of=as_of,
                                     config_file=str(config.absolute()) if config else None, command=command)
    except ClientbaseError as exc:
        _fail(exc)
    _print_summary(summary)


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date as YYYY-MM-DD") from None


@app.command()
def demo(
    home: Annotated[Path, typer.Option(help="Where inbox, warehouse, marts and reports go.")] = DEFAULT_HOME,
    scale: Annotated[int | None, typer.Option(help="Target number of bank transactions (benchmarks).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same files.")] = 42,
    generate_only: Annotated[bool, typer.Option(help="Write the demo inbox and stop.")] = False,
) -> None:
    """Generate a realistic synthetic company into HOME/inbox and run the whole pipeline on it."""
    from clientbase.demo import DemoSpec, generate

    spec = DemoSpec(seed=seed, scale=scale)
    summary = generate(home.absolute() / "inbox", spec)
    typer.echo(f"demo data: {summary.clients} clients, {summary.months} months, "
               f"{summary.bank_transactions} bank transactions, {len(summary.files)} files in {summary.inbox}")
    if not generate_only:
        _run(home, None, spec.end, None, "demo")


@app.command()
def run(
    home: Annotated[Path, typer.Option(help="The clientbase home (warehouse, marts, reports).")],
    inbox: Annotated[Path | None, typer.Option(help="Defaults to HOME/inbox.")] = None,
    as_of: Annotated[str | None, typer.Option(help="Last day included, YYYY-MM-DD (default: today).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (default: INBOX/config.yaml if present).")] = None,
    task_runner: TaskRunnerOption = None,
    dask_address: DaskAddressOption = None,
    workers: WorkersOption = None,
) -> None:
    """Ingest what is new in the inbox and rebuild the marts."""
    _run(home, inbox, _date(as_of), config, "run", task_runner, dask_address, workers)


@app.command()
def backfill(
    home: Annotated[Path, typer.Option(help="The clientbase home.")],
    start: Annotated[str, typer.Option(help="First month, YYYY-MM.")],
    end: Annotated[str, typer.Option(help="Last month, YYYY-MM.")],
    config: Annotated[Path | None, typer.Option(help="YAML config.")] = None,
    task_runner: TaskRunnerOption = None,
    dask_address: DaskAddressOption = None,
    workers: WorkersOption = None,
) -> None:
    """Recompute the marts for the months START..END from the warehouse (other months are kept)."""
    from clientbase.config import load_settings
    from clientbase.errors import ClientbaseError

    try:
        settings = load_settings(home, config_file=config)
        execution = execution_settings(settings, task_runner, dask_address, workers)
        from flows.pipeline import backfill as backfill_flow
        from flows.pipeline import run_with_execution
        from flows.steps import month_range

        month_range(start, end)
        summary = run_with_execution(backfill_flow, execution, home=str(home.absolute()), start=start, end=end,
                                     config_file=str(config.absolute()) if config else None)
    except ClientbaseError as exc:
        _fail(exc)
    _print_summary(summary)


@app.command()
def retract(
    files: Annotated[list[str], typer.Argument(help="Ingested files as the pipeline names them (relative to the "
                                                    "inbox), or their sha256.")],
    home: Annotated[Path, typer.Option(help="The clientbase home.")],
    inbox: Annotated[Path | None, typer.Option(help="Defaults to HOME/inbox.")] = None,
) -> None:
    """Take ingested files out of the warehouse (e.g. a statement that failed the raw gate) so that corrected
    files can take their place: correct or remove them in the inbox first; the next run rebuilds without them."""
    from clientbase.config import load_settings
    from clientbase.errors import ClientbaseError

    try:
        from flows.steps import retract_files

        settings = load_settings(home.absolute(), inbox=inbox)
        for path, file_hash in retract_files(settings, files):
            typer.echo(f"retracted {path} (sha256 {file_hash[:16]}…)")
    except ClientbaseError as exc:
        _fail(exc)
    typer.echo("the next run rebuilds staging and the marts without them")


@app.command()
def export(
    mart: Annotated[str, typer.Argument(help="Mart name, e.g. client_scorecard.")],
    home: Annotated[Path, typer.Option(help="The clientbase home.")] = DEFAULT_HOME,
    out: Annotated[Path | None, typer.Option(help="CSV file to write (default: HOME/exports/<mart>.csv).")] = None,
) -> None:
    """Write a published mart as CSV for spreadsheets (formula-like text cells neutralised)."""
    from clientbase.errors import ClientbaseError
    from warehouse.export import export_csv

    try:
        written = export_csv(home / "marts", mart, out or home / "exports" / f"{mart}.csv")
    except ClientbaseError as exc:
        _fail(exc)
    typer.echo(f"wrote {written}")


@app.command()
def docs(out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("docs/data_dictionary.md")) -> None:
    """Write the data dictionary generated from the mart modules' declared grain and schema."""
    from clientbase.dictionary import render

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    typer.echo(f"wrote {out}")


def quiet_teardown() -> None:
    """Point stderr at /dev/null once the last exit handler has run, before the interpreter tears its modules
    down: DuckDB's nanobind bindings print dozens of harmless "leaked instance" lines there after any command
    that ran a gate (README, Troubleshooting). Errors and tracebacks are printed before exit handlers run, so
    they still show; ``CLIENTBASE_SHOW_TEARDOWN=1`` keeps the teardown's output too. The test workers end the
    same way (tests/conftest.py)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def main() -> None:
    prefect_defaults()
    if os.environ.get("CLIENTBASE_SHOW_TEARDOWN") != "1":
        atexit.register(quiet_teardown)  # before Prefect and GX are imported: runs after their exit handlers
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
