"""Hardening: kill -9 at every stage boundary, and a second run while one is active (real processes).

The published history holds months up to September; the run under test brings October's statements. After a
kill the published marts must be the previous ones (or, once the switch happened, the complete new ones),
readable, and the next run must finish with marts equal to a run that was never interrupted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from clientbase.demo import DemoSpec, generate
from clientbase.errors import LockedError
from tests import crash_driver
from transforms.marts import MARTS

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_api")]

SPEC = DemoSpec(clients=30, months=6, seed=3)
NEW_MONTH = "2026-10"


def run(home: Path):
    from flows.pipeline import nightly

    return nightly(home=str(home), as_of=SPEC.end)


def digests(home: Path) -> dict[str, dict[str, str]]:
    """Content hash of every mart file, but the run log (it remembers the interrupted run, as it should)."""
    return {mart.NAME: {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted((home / "marts" / mart.NAME).glob("*.parquet"))}
            for mart in MARTS if mart.NAME != "run_log"}


def readable(home: Path) -> int:
    return sum(pl.read_parquet(p).height for p in (home / "marts").glob("*/*.parquet"))


def add_new_month(source_inbox: Path, home: Path) -> None:
    for path in sorted(source_inbox.glob(f"bank/*{NEW_MONTH}*")):
        shutil.copy2(path, home / "inbox" / "bank" / path.name)


def child(home: Path, step: str, mode: str, go_file: Path | None = None) -> crash_driver.Child:
    from prefect.settings import PREFECT_API_URL

    return crash_driver.start(home, SPEC.end, step, mode, go_file or home / "go", home.parent / f"{home.name}.log",
                              PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> dict[str, Path]:
    """A published history without October, and the digests of an uninterrupted run that adds October."""
    root = tmp_path_factory.mktemp("crash")
    generate(root / "full" / "inbox", SPEC)
    base = root / "base"
    shutil.copytree(root / "full" / "inbox", base / "inbox", ignore=shutil.ignore_patterns(f"*{NEW_MONTH}*"))
    run(base)
    clean = root / "clean"
    shutil.copytree(base, clean, symlinks=True)
    add_new_month(root / "full" / "inbox", clean)
    run(clean)
    return {"base": base, "clean": clean, "full_inbox": root / "full" / "inbox"}


STEPS = [("ingest_file", "kill-after"), ("gate_raw", "kill-after"), ("stage", "kill-after"),
         ("gate_staged", "kill-after"), ("prepare_marts", "kill-after"), ("build_client_month", "kill-after"),
         ("build_asof_marts", "kill-after"), ("gate_marts", "kill-after"), ("publish_marts", "kill-before"),
         ("publish_marts", "kill-after")]


@pytest.mark.parametrize(("step", "mode"), STEPS, ids=[f"{m}-{s}" for s, m in STEPS])
def test_kill_at_a_stage_boundary_keeps_marts_and_the_next_run_recovers(homes, tmp_path, step, mode):
    work = tmp_path / "home"
    shutil.copytree(homes["base"], work, symlinks=True)
    add_new_month(homes["full_inbox"], work)
    before, link_before = digests(work), os.readlink(work / "marts")

    proc = child(work, step, mode)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -9, err[-2000:]

    switched = (step, mode) == ("publish_marts", "kill-after")
    if switched:  # the switch is the commit point: the new marts are complete and live
        assert digests(work) == digests(homes["clean"])
    else:
        assert os.readlink(work / "marts") == link_before
        assert digests(work) == before
    assert readable(work) > 0

    summary = run(work)  # the next run tidies up and completes
    assert summary["gates"]["marts"] == "passed"
    assert digests(work) == digests(homes["clean"])
    versions = {p.name for p in (work / ".marts_versions").iterdir()}
    assert os.readlink(work / "marts").split("/")[-1] in versions
    assert not (work / ".work").exists() or not any((work / ".work").iterdir())  # no intermediate files left
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    try:
        statuses = [r[0] for r in con.execute("SELECT status FROM ops.run_log ORDER BY started_at").fetchall()]
        (files,), = con.execute("SELECT count(*) FROM ops.ingested_file").fetchall()
    finally:
        con.close()
    # history, the killed run (found dead by the next one), the recovery run
    assert statuses == ["published", "published" if switched else "killed", "published"]
    assert files == sum(1 for p in homes["full_inbox"].rglob("*") if p.is_file())  # each file loaded once


def test_a_second_run_while_one_is_active_exits_clearly_and_corrupts_nothing(homes, tmp_path):
    work = tmp_path / "home"
    shutil.copytree(homes["base"], work, symlinks=True)
    add_new_month(homes["full_inbox"], work)
    go = tmp_path / "go"
    first = child(work, "build_asof_marts", "pause-before", go)
    try:
        waiting = go.with_suffix(".waiting")
        for _ in range(1200):
            if waiting.exists() or first.poll() is not None:
                break
            import time

            time.sleep(0.1)
        assert waiting.exists(), first.communicate()[1][-2000:]
        with pytest.raises(LockedError, match=rf"another clientbase run \(pid {first.pid}\)"):
            run(work)
    finally:
        go.touch()
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert digests(work) == digests(homes["clean"])
