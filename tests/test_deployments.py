"""prefect.yaml stays in step with the flows it deploys (entrypoints exist, parameters match)."""

import importlib
import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent


def test_deployments_point_at_real_flows_with_valid_parameters():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert set(by_name) == {"nightly", "backfill"}
    assert by_name["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    for deployment in spec["deployments"]:
        path, func = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert flow.__class__.__name__ == "Flow"
        params = inspect.signature(flow.fn).parameters
        assert set(deployment["parameters"]) <= set(params)
        required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
        missing = required - set(deployment["parameters"])
        # what a deployment leaves out must be passed at run time: only the backfill's months
        assert missing == ({"start", "end"} if deployment["name"] == "backfill" else set())
