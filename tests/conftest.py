"""Test session setup: a private PREFECT_HOME, offline Prefect settings, one ephemeral API for flow tests."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Must happen before anything imports prefect: its settings are read at import time.
_PREFECT_HOME = tempfile.mkdtemp(prefix="clientbase-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_UI_ENABLED"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "False"

FIXTURES = Path(__file__).parent / "fixtures"


def _remove_prefect_home() -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


# registered before Prefect is imported, so it runs after Prefect's own exit handlers; pytest_unconfigure calls
# it itself where it ends the process with os._exit
atexit.register(_remove_prefect_home)

# Property tests draw the same examples on every run (a seed from each test's name), so a red run is the
# change's doing and replays; CLIENTBASE_FUZZ_RANDOM=1 draws new ones (with CLIENTBASE_FUZZ_EXAMPLES=3000: new
# ground). Loaded here, before the test modules build their settings from the default profile.
from hypothesis import settings as _hypothesis  # noqa: E402

_hypothesis.register_profile("clientbase", derandomize=os.environ.get("CLIENTBASE_FUZZ_RANDOM") != "1")
_hypothesis.load_profile("clientbase")


@pytest.fixture(scope="session")
def prefect_api():
    """Start Prefect's temporary API server once for the whole session (it takes ~20-30 s on 2 cores)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Exit without interpreter teardown once pytest has reported.

    After a flow run fails inside the Prefect test harness, DuckDB's nanobind bindings print dozens of
    "leaked instance" lines at interpreter shutdown, after pytest's summary (the objects are module-level
    enums still referenced during finalisation; nothing leaks during the run). They would bury the summary
    that CI reads, so the test process ends here with pytest's own exit status. A pytest-xdist worker (``make
    test`` runs the suite on several) must end normally, its channel to the controller closing cleanly: its
    results were sent at session finish, so only its stderr is closed at exit (after pytest's capture has put
    it back), before the teardown that prints them.
    """
    full_teardown = os.environ.get("CLIENTBASE_TEST_FULL_TEARDOWN") == "1"
    if hasattr(config, "workerinput"):
        if not full_teardown:
            from clientbase.cli import quiet_teardown  # how the CLI ends too

            atexit.register(quiet_teardown)
        return
    if _EXIT_STATUS and not full_teardown:
        sys.stdout.flush()
        sys.stderr.flush()
        _remove_prefect_home()  # os._exit runs no exit handlers
        os._exit(_EXIT_STATUS[0])
