"""Runs the nightly flow in a child process and kills it with SIGKILL at a stage boundary (or pauses there).

``start(home, as_of, step, mode, go_file, log, api_url)`` starts the child against the Prefect API at
``api_url``; ``mode`` is kill-before, kill-after or pause-before. STEP is a function of ``flows.steps``
(ingest_file, gate_raw, stage, ...). It is wrapped before ``flows.pipeline`` wraps the steps into Prefect tasks,
so the kill happens exactly between two steps of a real flow run. ``pause-before`` waits until GO_FILE exists
(to hold the HOME lock for a concurrency test).

The children are forked from a multiprocessing forkserver that imported Prefect, GX and the steps once (~8 s
of one core per child otherwise), but not ``flows.pipeline``: each child imports that after wrapping its step.
Each child is a real process of its own (own pid, own HOME lock, killed by a real SIGKILL); its stdout and
stderr go to ``log``. Used by tests/test_crash.py only.
"""

from __future__ import annotations

import datetime as dt
import functools
import multiprocessing
import os
import signal
import time
from pathlib import Path

# imported once by the forkserver: what flows.pipeline and a run need, but not flows.pipeline itself
PRELOAD = ["flows.steps", "prefect.flows", "prefect.futures", "prefect.task_runners", "prefect.cache_policies",
           "clientbase.report", "great_expectations", "duckdb_engine"]


class Child:
    """The part of ``subprocess.Popen`` the crash tests use, for a forked child whose output goes to a file."""

    def __init__(self, process: multiprocessing.process.BaseProcess, log: Path) -> None:
        self.process, self.log = process, log

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()  # not left running past a failed test
            raise TimeoutError(f"crash driver child {self.process.pid} still running after {timeout} s")
        return "", self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def start(home: Path, as_of: dt.date, step: str, mode: str, go_file: Path, log: Path, api_url: str) -> Child:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    # daemonic: a child still running when the test process ends is terminated, not waited for
    process = context.Process(target=_main, args=(str(home), as_of, step, mode, str(go_file), str(log), api_url),
                              daemon=True)
    process.start()
    return Child(process, log)


def _main(home: str, as_of: dt.date, step: str, mode: str, go_file: str, log: str, api_url: str) -> None:
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    import flows.steps as steps

    original = getattr(steps, step)

    @functools.wraps(original)  # Prefect binds task parameters by the step's signature
    def wrapped(*args, **kwargs):
        if mode == "kill-before":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "pause-before":
            Path(go_file).with_suffix(".waiting").touch()
            while not Path(go_file).exists():
                time.sleep(0.1)
        result = original(*args, **kwargs)
        if mode == "kill-after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(steps, step, wrapped)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import nightly

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        nightly(home=home, as_of=as_of)
