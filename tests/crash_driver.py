"""Runs the nightly flow in a child process and kills it with SIGKILL at a stage boundary (or pauses there).

    python tests/crash_driver.py HOME AS_OF STEP kill-before|kill-after|pause-before GO_FILE

STEP is a function of ``flows.steps`` (ingest_file, gate_raw, stage, ...). It is wrapped before
``flows.pipeline`` wraps the steps into Prefect tasks, so the kill happens exactly between two steps of a
real flow run. ``pause-before`` waits until GO_FILE exists (to hold the HOME lock for a concurrency test).
Used by tests/test_crash.py only.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import signal
import sys
import time
from pathlib import Path

import flows.steps as steps


def main() -> None:
    home, as_of, step, mode, go_file = sys.argv[1:6]
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
    from flows.pipeline import nightly

    nightly(home=home, as_of=dt.date.fromisoformat(as_of))


if __name__ == "__main__":
    main()
