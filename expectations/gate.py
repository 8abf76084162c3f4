"""Running a gate: validate datasets against a suite, produce ``dq_results`` rows and a verdict.

Datasets come in as polars frames and are validated through GX's pandas engine. Decimal money columns are
shown to GX as floats (its comparisons need numbers); exact money rules are the derived ``diff`` datasets,
computed with Decimals before they get here.

With ``docs_dir`` the gate also writes GX Data Docs (one static site per gate, replaced by each run); the
HTML report links to them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from expectations.suites import Suite


@dataclass
class GateOutcome:
    gate: str
    passed: bool
    results: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _to_pandas(frame: pl.DataFrame):
    decimals = [c for c, t in frame.schema.items() if isinstance(t, pl.Decimal)]
    return frame.with_columns(pl.col(decimals).cast(pl.Float64)).to_pandas()


def _describe(result) -> tuple[str, str | None]:
    res = result.result or {}
    if res.get("observed_value") is not None:
        observed = res["observed_value"]
    elif res.get("unexpected_count") is not None:
        observed = {"unexpected_count": res["unexpected_count"],
                    "examples": res.get("partial_unexpected_list", [])[:5]}
    else:
        observed = None
    return json.dumps(observed, default=str, ensure_ascii=False), res.get("unexpected_count")


def run_gate(gate: str, run_id: str, datasets: dict[str, pl.DataFrame], suite: Suite,
             docs_dir: Path | None = None) -> GateOutcome:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name=f"{gate}_gate")
    outcome = GateOutcome(gate=gate, passed=True)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for dataset, expectations in suite.items():
        if dataset not in datasets:
            raise KeyError(f"gate {gate}: dataset {dataset} was not provided")
        batches = source.add_dataframe_asset(name=dataset).add_batch_definition_whole_dataframe("all")
        gx_suite = context.suites.add(gx.ExpectationSuite(name=f"{gate}.{dataset}"))
        for expectation in expectations:
            gx_suite.add_expectation(expectation)
        # a validation definition (not batch.validate) so the result is kept for the Data Docs
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{gate}.{dataset}", data=batches, suite=gx_suite),
        ).run(batch_parameters={"dataframe": _to_pandas(datasets[dataset])})
        for result in validation.results:
            config = result.expectation_config
            column = config.kwargs.get("column") or ",".join(config.kwargs.get("column_list") or []) or None
            observed, _ = _describe(result)
            outcome.results.append({
                "run_id": run_id, "gate": gate, "dataset": dataset, "check_name": config.type,
                "column_name": column, "success": bool(result.success), "observed": observed, "checked_at": now,
            })
            if not result.success:
                outcome.passed = False
                what = f"{dataset}.{column}" if column else dataset
                outcome.failures.append(f"{what} {config.type} (observed {observed})")
    if docs_dir is not None:
        _write_data_docs(context, docs_dir)
    return outcome


def _write_data_docs(context, docs_dir: Path) -> None:
    """Build the site beside ``docs_dir`` and swap it in, so a reader never sees half a site."""
    building = docs_dir.with_name(docs_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    context.add_data_docs_site(site_name="gate", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(building)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    context.build_data_docs(site_names=["gate"])
    shutil.rmtree(docs_dir, ignore_errors=True)
    building.rename(docs_dir)
