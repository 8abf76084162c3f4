"""The CLI's error paths: one clear line, the right exit code, fast (they fail before Prefect starts)."""

import os
import subprocess
import sys


def clientbase(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clientbase.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_config_error_exits_2_with_one_line(tmp_path):
    (tmp_path / "inbox" / "bank").mkdir(parents=True)
    (tmp_path / "inbox" / "config.yaml").write_text("reporting_currency: 42\n")
    result = clientbase("run", "--home", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"clientbase: error: {tmp_path / 'inbox' / 'config.yaml'}: invalid configuration")


def test_empty_inbox_exits_3(tmp_path):
    (tmp_path / "inbox" / "bank").mkdir(parents=True)
    result = clientbase("run", "--home", str(tmp_path))
    assert result.returncode == 3
    assert result.stderr.strip() == (f"clientbase: error: {tmp_path / 'inbox'}: inbox is empty; put bank statements "
                                     f"in {tmp_path / 'inbox' / 'bank'} and CRM dumps in {tmp_path / 'inbox' / 'crm'}")


def test_missing_inbox(tmp_path):
    result = clientbase("run", "--home", str(tmp_path), "--inbox", str(tmp_path / "nope"))
    assert result.returncode == 3
    assert "inbox directory not found" in result.stderr


def test_bad_backfill_month(tmp_path):
    result = clientbase("backfill", "--home", str(tmp_path), "--start", "2025-13", "--end", "2025-12")
    assert result.returncode == 3
    assert "--start '2025-13': expected a month as YYYY-MM" in result.stderr


def test_docs_are_generated_from_mart_modules(tmp_path):
    out = tmp_path / "dd.md"
    result = clientbase("docs", "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "## client_month" in text and "| net_revenue | Decimal(precision=18, scale=2) | revenue - refunds |" in text


def test_committed_data_dictionary_is_current():
    from pathlib import Path

    from clientbase.dictionary import render

    committed = Path(__file__).parent.parent / "docs" / "data_dictionary.md"
    assert committed.read_text(encoding="utf-8") == render(), "run `clientbase docs` and commit the result"


def test_bad_execution_option_exits_2_before_prefect_starts(tmp_path):
    (tmp_path / "inbox" / "bank").mkdir(parents=True)
    result = clientbase("run", "--home", str(tmp_path), "--task-runner", "processes")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("clientbase: error: invalid execution options: task_runner: Input "
                                            "should be 'threads' or 'dask'")
    result = clientbase("run", "--home", str(tmp_path), "--dask-address", "scheduler:8786")
    assert result.returncode == 2
    assert "dask_address 'scheduler:8786': expected a scheduler address such as tcp://scheduler:8786" in result.stderr


def test_retract_takes_a_file_out_or_says_why_not(tmp_path, fixtures):
    from clientbase.config import load_settings
    from flows import steps

    bank = tmp_path / "inbox" / "bank"
    bank.mkdir(parents=True)
    statement = bank / "s.xml"
    statement.write_bytes((fixtures / "bank" / "camt053_v08_pty.xml").read_bytes())
    settings = load_settings(tmp_path)
    files, _ = steps.discover(settings)
    steps.ingest_file(settings, files[0], "run-1")

    unknown = clientbase("retract", "bank/t.xml", "--home", str(tmp_path))
    assert unknown.returncode == 3
    assert unknown.stderr.strip().splitlines() == [
        f"clientbase: error: bank/t.xml: no ingested file has this path or hash; the table ops.ingested_file of "
        f"{tmp_path / 'warehouse.duckdb'} lists them (path, file_hash)"]
    still = clientbase("retract", "bank/s.xml", "--home", str(tmp_path))
    assert still.returncode == 3 and "still holds bank/s.xml" in still.stderr

    statement.unlink()
    done = clientbase("retract", "bank/s.xml", "--home", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("retracted bank/s.xml (sha256 ")
    assert steps.gate_raw(settings, "run-2") is None  # no file left to gate


_NOISY_TEARDOWN = """
import os, sys


class Noisy:  # what DuckDB's bindings do: write to stderr while the interpreter tears __main__ down
    def __del__(self):
        os.write(2, b"nanobind: leaked 27 instances!\\n")


noisy = Noisy()
from clientbase import cli

sys.argv = ["clientbase", *sys.argv[1:]]
cli.main()
"""


def test_teardown_output_is_kept_out_of_the_log_and_errors_are_not(tmp_path):
    script = tmp_path / "noisy.py"
    script.write_text(_NOISY_TEARDOWN, encoding="utf-8")

    def run(*args, show=None):
        env = {k: v for k, v in os.environ.items() if k != "CLIENTBASE_SHOW_TEARDOWN"}
        if show:
            env["CLIENTBASE_SHOW_TEARDOWN"] = show
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                              timeout=120)

    quiet = run("docs", "--out", str(tmp_path / "dd.md"))
    assert quiet.returncode == 0 and quiet.stdout.startswith("wrote ") and quiet.stderr == ""
    failed = run("backfill", "--home", str(tmp_path), "--start", "2025-13", "--end", "2025-12")
    assert failed.returncode == 3 and failed.stderr.startswith("clientbase: error: --start '2025-13'")
    assert "leaked" not in failed.stderr
    shown = run("docs", "--out", str(tmp_path / "dd.md"), show="1")
    assert shown.returncode == 0 and shown.stderr == "nanobind: leaked 27 instances!\n"
