"""Scale-out: the nightly flow with its per-month tasks on a Dask cluster gives the same marts as one process.

The cluster is a real ``distributed.LocalCluster`` with worker processes, reached by its scheduler address
exactly as a remote cluster would be (``execution.dask_address``); prefect-dask carries the Prefect settings
(the test harness's API URL) to the workers with each task.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from clientbase.demo import DemoSpec, generate

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_api")]

SPEC = DemoSpec(clients=60, months=14, seed=7)


def marts_digest(home: Path) -> dict[str, dict[str, str]]:
    """sha256 of every parquet file per mart (run_log is left out: it holds run ids and timestamps)."""
    marts = {}
    for folder in sorted(p for p in (home / "marts").iterdir() if p.is_dir() and not p.name.startswith("_")):
        if folder.name != "run_log":
            marts[folder.name] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                                  for f in sorted(folder.glob("*.parquet"))}
    return marts


@pytest.fixture(scope="module")
def inbox(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dask-inbox")
    generate(root / "inbox", SPEC)
    return root / "inbox"


def test_nightly_on_a_dask_cluster_equals_the_single_process_run(inbox, tmp_path):
    from distributed import Client, LocalCluster
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from clientbase.config import ExecutionConfig
    from flows.pipeline import nightly, with_execution
    from transforms.marts import MARTS

    single, distributed_ = tmp_path / "single", tmp_path / "dask"
    for home in (single, distributed_):
        shutil.copytree(inbox, home / "inbox")

    one = nightly(home=str(single), as_of=SPEC.end)  # the default: a thread pool in this process

    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
          Client(cluster) as client):
        worker_pids = set(client.run(os.getpid).values())
        on_dask = with_execution(nightly, ExecutionConfig(task_runner="dask", dask_address=cluster.scheduler_address))
        two = on_dask(home=str(distributed_), as_of=SPEC.end)

    months = sorted(p.name.removeprefix("month=").removesuffix(".parquet")
                    for p in (single / "marts" / "client_month").glob("month=*.parquet"))
    assert len(months) == SPEC.months and months[-1] == f"{SPEC.end:%Y-%m}-01"
    assert one["months"]["computed"] == two["months"]["computed"] == months and two["months"]["carried"] == []
    # the month tasks ran in the cluster's worker processes, not in the flow's process
    pids = {int(worker.rsplit(":", 1)[1]) for worker in two["months"]["workers"]}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert pids and pids <= worker_pids
    assert {int(w.rsplit(":", 1)[1]) for w in one["months"]["workers"]} == {os.getpid()}

    # identical marts, file by file
    digest_one, digest_two = marts_digest(single), marts_digest(distributed_)
    assert set(digest_one) == {mart.NAME for mart in MARTS} - {"run_log"}
    assert all(digest_one[mart] for mart in digest_one)
    assert len(digest_one["client_month"]) == SPEC.months
    assert digest_two == digest_one

    # Prefect recorded each month as its own completed task run of the Dask flow run
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[two["flow_run_id"]])))
    month_runs = sorted(r.name for r in runs if r.name.startswith("client_month "))
    assert month_runs == sorted(f"client_month {m}" for m in two["months"]["computed"])
    assert all(r.state is not None and r.state.is_completed() for r in runs)
