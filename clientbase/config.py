"""One typed settings object, built once at the entry point (CLI or Prefect deployment).

``HOME/inbox/config.yaml`` (or ``--config FILE``) is optional; every key has a default. Unknown keys and bad
values are errors that name the key and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clientbase.errors import ConfigError
from sources.crm import Preset


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassificationConfig(_Strict):
    """Which bank transactions are client payments (DOMAIN §1, §9)."""

    own_accounts: tuple[str, ...] = Field(
        default=(), description="IBANs/account numbers of our own accounts: transfers between them are not revenue."
    )
    excluded_counterparty_ids: tuple[str, ...] = Field(
        default=(), description="Tax ids or accounts of tax authorities, payroll, banks: never clients."
    )
    excluded_purpose_keywords: tuple[str, ...] = Field(
        default=(), description="Case-insensitive words in the payment purpose that mark a non-client payment."
    )


class IdentityConfig(_Strict):
    """Matching bank counterparties to CRM clients (issue 4)."""

    fuzzy_threshold: float = Field(default=90.0, ge=50, le=100,
                                   description="Minimum rapidfuzz token_sort_ratio for a name match.")
    overrides_file: str = Field(default="client_overrides.csv",
                                description="CSV counterparty_key,client_id (relative to the inbox); applied first.")
    bank_names: Literal["companies", "all"] = Field(
        default="companies",
        description="Which payer names the bank wrote may name a client in the marts: 'companies' only those with a "
                    "company legal form (GmbH, Ltd, ООО, ...; a payer without one may be a person, whose name is "
                    "personal data); 'all' any name (only with a legal basis to publish people's names).")
    unmatched_min_amount: float = Field(default=0.0, ge=0,
                                        description="Counterparties paying less than this stay out of the "
                                                    "unmatched_counterparties mart.")


class FxConfig(_Strict):
    rates_file: str = Field(default="fx_rates.csv",
                            description="CSV date,currency,rate (reporting-currency units per unit), relative to "
                                        "the inbox.")
    max_rate_age_days: int = Field(default=7, ge=0, le=366,
                                   description="How old the latest rate may be on a booking day.")


class EconomicsConfig(_Strict):
    """Client profitability (DOMAIN §1-3). Money in the reporting currency, rates as fractions."""

    default_margin: float = Field(default=0.30, ge=0, le=1,
                                  description="Gross margin share of revenue when invoices carry no cost.")
    margin_by_industry: dict[str, float] = Field(default={}, description="Default margin per CRM industry.")
    default_hourly_cost: float = Field(default=50.0, ge=0,
                                       description="Hourly cost of a person without one in the CRM.")
    support_hourly_cost: float | None = Field(default=None, ge=0,
                                              description="Hourly cost of support time (default: the ticket "
                                                          "manager's, else default_hourly_cost).")
    cost_of_capital: float = Field(default=0.10, ge=0, le=1,
                                   description="Annual cost of capital for late payments.")
    payment_terms_days: int = Field(default=30, ge=0, le=365,
                                    description="Due date = issue date + this, when invoices have none.")
    write_off_days: int = Field(default=180, ge=1, le=3650,
                                description="Unpaid this many days past due = bad debt.")
    window_months: int = Field(default=12, ge=1, le=120, description="Scorecard window: last N full months.")
    abc_a: float = Field(default=0.80, gt=0, lt=1, description="A: cumulative share before the client < this.")
    abc_b: float = Field(default=0.95, gt=0, lt=1, description="B: cumulative share before the client < this.")
    top_share: float = Field(default=0.20, gt=0, lt=1, description="Pareto: share of the top clients.")
    pareto_reach: float = Field(default=0.80, gt=0, le=1,
                                description="Pareto: the share of the measure whose clients are counted "
                                            "(clients_share_to_reach).")
    phase_out_bottom: tuple[int, ...] = Field(default=(5, 10), description="What-if: drop the bottom N by profit.")
    xyz_x: float = Field(default=0.10, gt=0, description="X: coefficient of variation <= this.")
    xyz_y: float = Field(default=0.25, gt=0, description="Y: coefficient of variation <= this (Z above).")
    xyz_min_months: int = Field(default=3, ge=2, le=120,
                                description="XYZ: fewer months than this in the window gives no class.")
    ltv_min_segment: int = Field(default=30, ge=1,
                                 description="LTV: T is the average lifetime of the client's ABC class when it has "
                                             "at least this many clients, else of all clients.")

    @model_validator(mode="after")
    def _ordered(self) -> EconomicsConfig:
        if self.abc_a >= self.abc_b:
            raise ValueError(f"abc_a ({self.abc_a}) must be below abc_b ({self.abc_b})")
        if self.xyz_x > self.xyz_y:
            raise ValueError(f"xyz_x ({self.xyz_x}) must not be above xyz_y ({self.xyz_y})")
        if self.xyz_min_months > self.window_months:
            raise ValueError(f"xyz_min_months ({self.xyz_min_months}) is more than the window_months "
                             f"({self.window_months}) XYZ looks at: no client would get a class")
        return self


class BehaviourConfig(_Strict):
    """Slipping clients, key clients and dependency (DOMAIN §5, §7)."""

    at_risk_factor: float = Field(default=1.0, ge=1, description="At risk: silent longer than this x its usual gap "
                                                                 "(1: beyond its usual gap; higher: a quieter list).")
    regular_months: int = Field(default=3, ge=1, description="Ladder 'regular': purchases in at least this many of "
                                                             "the last regular_window_months months.")
    regular_window_months: int = Field(default=6, ge=1, le=60, description="See regular_months.")
    exclusive_share_of_wallet: float = Field(default=0.80, gt=0, le=1,
                                             description="Ladder 'adherent': CRM share of wallet at least this.")
    key_client_share: float = Field(default=0.10, gt=0, lt=1, description="Key client: above this share of a unit.")
    dependency_diversify: float = Field(default=0.20, gt=0, lt=1, description="Top client above this: diversify.")
    dependency_severe: float = Field(default=0.40, gt=0, lt=1, description="Above this: severe dependency.")
    dependency_critical: float = Field(default=0.50, gt=0, lt=1, description="Above this: critical dependency.")
    max_key_clients_per_manager: int = Field(default=3, ge=1, description="More key clients is an overload.")

    @model_validator(mode="after")
    def _ordered(self) -> BehaviourConfig:
        levels = (self.dependency_diversify, self.dependency_severe, self.dependency_critical)
        if not levels[0] < levels[1] < levels[2]:
            raise ValueError(f"dependency_diversify < dependency_severe < dependency_critical expected, got {levels}")
        if self.regular_months > self.regular_window_months:
            raise ValueError(f"regular_months ({self.regular_months}) is more than regular_window_months "
                             f"({self.regular_window_months})")
        return self


class SegmentRule(_Strict):
    """One ordered segment (DOMAIN §8.3): the first rule a client meets decides its segment."""

    name: str
    team: Literal["upsell", "win_back", "new_business"]
    rule: str

    @field_validator("rule")
    @classmethod
    def _valid(cls, value: str) -> str:
        from transforms.marts.client_scorecard import rule_columns
        from transforms.rules import RuleError, compile_rule

        try:
            compile_rule(value, rule_columns())
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        return value


DEFAULT_SEGMENTS = (
    SegmentRule(name="Key accounts: A clients growing with us", team="upsell",
                rule="abc_revenue == 'A' and is_growing and not is_at_risk"),
    SegmentRule(name="Valuable clients slipping away", team="win_back",
                rule="abc_revenue in ['A', 'B'] and is_at_risk"),
    SegmentRule(name="A clients to protect", team="upsell", rule="abc_revenue == 'A'"),
    SegmentRule(name="B clients with room to grow", team="upsell", rule="abc_revenue == 'B'"),
    SegmentRule(name="Lost clients worth winning back", team="win_back",
                rule="ladder_stage == 'lost' and revenue_prev_12m > 0"),
    SegmentRule(name="Small current clients", team="upsell", rule="net_revenue > 0"),
    SegmentRule(name="Never bought", team="new_business", rule="ladder_stage == None"),
)


class CrmConfig(_Strict):
    mappings: tuple[Preset, ...] = Field(
        default=(), description="Your own CRM export mappings (same shape as sources/crm_presets/*.yaml); tried "
                                "before the vendor presets.")


class ExecutionConfig(_Strict):
    """Where the per-month tasks run (the flow itself always runs in the calling process), and how many files
    are loaded at once."""

    task_runner: Literal["threads", "dask"] = Field(
        default="threads", description="threads: a thread pool in this process (the default); dask: a Dask "
                                       "cluster through prefect-dask.")
    workers: int = Field(default=2, ge=1, le=256,
                         description="threads: pool size; dask without an address: local worker processes.")
    threads_per_worker: int = Field(default=1, ge=1, le=64, description="dask without an address: threads per "
                                                                        "local worker process.")
    ingest_workers: int = Field(default=2, ge=1, le=16,
                                description="Inbox files parsed and loaded at the same time (threads in the flow's "
                                            "process, whatever the task runner; the files still commit one by one "
                                            "in inbox order). 1 loads them one after another.")
    dask_address: str | None = Field(
        default=None, description="Scheduler of an existing Dask cluster, e.g. tcp://scheduler:8786; without it a "
                                  "temporary local cluster is started for the run.")
    duckdb_memory_limit: str = Field(
        default="40%", pattern=r"^[0-9]+(\.[0-9]+)? ?(%|[KMGT]i?B)$",
        description="DuckDB's buffer memory per database the run opens (the warehouse; a CRM dump's scratch "
                    "database gets the same): a share of RAM ('40%') or a size ('8GB', '6GiB'). Past it DuckDB "
                    "spills to HOME's temporary files instead of growing, leaving the rest of the machine to the "
                    "polars steps.")

    @model_validator(mode="after")
    def _address_needs_dask(self) -> ExecutionConfig:
        if self.dask_address is not None and self.task_runner != "dask":
            raise ValueError("dask_address is set but task_runner is not 'dask'")
        if self.dask_address is not None and "://" not in self.dask_address:
            raise ValueError(f"dask_address {self.dask_address!r}: expected a scheduler address such as "
                             "tcp://scheduler:8786")
        return self


class Settings(_Strict):
    """Everything a run needs. Paths are derived from ``home``; nothing else reads the environment."""

    home: Path
    inbox: Path | None = Field(default=None, description="Defaults to HOME/inbox.")
    as_of: dt.date | None = Field(default=None, description="Last day included; defaults to today.")
    reporting_currency: str = Field(default="EUR", description="ISO 4217 code every amount is reported in.")
    activity_window_days: int = Field(default=365, ge=1, le=3650)
    earliest_booking_date: dt.date = Field(
        default=dt.date(1990, 1, 1),
        description="Bank rows booked before this day fail the raw gate: a mistyped year (1025 for 2025) would "
                    "otherwise open a cohort a thousand years back, and every period mart would span them.")
    classification: ClassificationConfig = ClassificationConfig()
    identity: IdentityConfig = IdentityConfig()
    fx: FxConfig = FxConfig()
    crm: CrmConfig = CrmConfig()
    economics: EconomicsConfig = EconomicsConfig()
    behaviour: BehaviourConfig = BehaviourConfig()
    segments: tuple[SegmentRule, ...] = Field(default=DEFAULT_SEGMENTS,
                                              description="Ordered segment rules; the first match wins.")
    keep_versions: int = Field(default=2, ge=1, le=20, description="Published mart versions kept for readers.")
    execution: ExecutionConfig = ExecutionConfig()

    @field_validator("reporting_currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        if len(value) != 3 or not value.isalpha() or not value.isupper():
            raise ValueError("must be a three-letter upper-case ISO 4217 code such as EUR")
        return value

    # ---- derived paths -------------------------------------------------------------------------------
    @property
    def inbox_dir(self) -> Path:
        return self.inbox if self.inbox is not None else self.home / "inbox"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def marts_dir(self) -> Path:
        return self.home / "marts"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def data_docs_dir(self) -> Path:
        """GX Data Docs of the last run, one site per gate (``<gate>/index.html``); the report links here."""
        return self.reports_dir / "data_quality"

    @property
    def effective_as_of(self) -> dt.date:
        return self.as_of if self.as_of is not None else dt.date.today()


# Keys of the YAML file that map onto Settings; home/inbox/as_of come from the command line.
_FILE_KEYS = set(Settings.model_fields) - {"home", "inbox", "as_of"}


def _format_validation_error(path: Path, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(_FILE_KEYS))
            parts.append(f"unknown key '{loc}' (allowed top-level keys: {allowed})")
        else:
            parts.append(f"key '{loc}': {e['msg']} (got {e.get('input')!r})")
    return f"{path}: invalid configuration: " + "; ".join(parts)


def load_settings(
    home: Path,
    *,
    inbox: Path | None = None,
    as_of: dt.date | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build the settings from the command line plus the optional YAML file.

    The file is ``config_file`` if given (it must exist), else ``<inbox>/config.yaml`` if present.
    """
    home = Path(home).absolute()
    inbox = Path(inbox).absolute() if inbox is not None else None
    data: dict[str, Any] = {}
    candidate = config_file if config_file is not None else (inbox or home / "inbox") / "config.yaml"
    candidate = Path(candidate)
    if config_file is not None and not candidate.is_file():
        raise ConfigError(f"{candidate}: config file not found; pass an existing YAML file to --config")
    if candidate.is_file():
        try:
            loaded = yaml.safe_load(candidate.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{candidate}: not valid YAML: {exc}".replace("\n", " ")) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{candidate}: the top level must be a mapping of keys, got {type(loaded).__name__}")
        for key in ("home", "inbox", "as_of"):
            if key in loaded:
                raise ConfigError(f"{candidate}: key '{key}' is set on the command line, not in the config file")
        data.update(loaded)
    try:
        return Settings(home=home, inbox=inbox, as_of=as_of, **data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(candidate, exc)) from None
