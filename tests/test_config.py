import datetime as dt
from pathlib import Path

import pytest

from clientbase.config import load_settings
from clientbase.errors import ConfigError
from transforms import identity


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "inbox" / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_config_file(tmp_path):
    settings = load_settings(tmp_path)
    assert settings.reporting_currency == "EUR"
    assert settings.activity_window_days == 365
    assert settings.inbox_dir == tmp_path / "inbox"
    assert settings.warehouse_path == tmp_path / "warehouse.duckdb"
    assert settings.marts_dir == tmp_path / "marts"


def test_inbox_config_is_read(tmp_path):
    write(tmp_path, "reporting_currency: USD\nclassification:\n  own_accounts: [DE89370400440532013000]\n")
    settings = load_settings(tmp_path)
    assert settings.reporting_currency == "USD"
    assert settings.classification.own_accounts == ("DE89370400440532013000",)


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "reporting_curency: USD\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert str(path) in str(err.value)
    assert "unknown key 'reporting_curency'" in str(err.value)


def test_bad_value_is_named(tmp_path):
    write(tmp_path, "reporting_currency: euro\n")
    with pytest.raises(ConfigError, match=r"key 'reporting_currency': .*ISO 4217.*'euro'"):
        load_settings(tmp_path)


def test_nested_bad_value_is_named(tmp_path):
    write(tmp_path, "activity_window_days: 0\n")
    with pytest.raises(ConfigError, match="key 'activity_window_days'"):
        load_settings(tmp_path)


def test_not_a_mapping(tmp_path):
    write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(tmp_path)


def test_broken_yaml(tmp_path):
    write(tmp_path, "reporting_currency: [EUR\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(tmp_path)


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path, config_file=tmp_path / "nope.yaml")


def test_command_line_keys_are_refused_in_the_file(tmp_path):
    write(tmp_path, "home: /elsewhere\n")
    with pytest.raises(ConfigError, match="key 'home' is set on the command line"):
        load_settings(tmp_path)


def test_segment_rules_are_validated_at_load(tmp_path):
    write(tmp_path, "segments:\n  - name: Big\n    team: upsell\n    rule: \"turnover > 5\"\n")
    with pytest.raises(ConfigError, match=r"key 'segments.0.rule'.*unknown column 'turnover'"):
        load_settings(tmp_path)
    write(tmp_path, "segments:\n  - name: Big\n    team: sales\n    rule: \"abc_revenue == 'A'\"\n")
    with pytest.raises(ConfigError, match=r"key 'segments.0.team'"):
        load_settings(tmp_path)
    write(tmp_path, "segments:\n  - name: Transport A\n    team: upsell\n"
                    "    rule: \"abc_revenue == 'A' and tenure_years > 5 and industry in ['transport']\"\n")
    assert [s.name for s in load_settings(tmp_path).segments] == ["Transport A"]


def test_default_segments_ship():
    from clientbase.config import DEFAULT_SEGMENTS

    assert [s.team for s in DEFAULT_SEGMENTS][:2] == ["upsell", "win_back"]
    assert {s.team for s in DEFAULT_SEGMENTS} == {"upsell", "win_back", "new_business"}


def test_execution_defaults_to_a_small_thread_pool_and_builds_the_runner(tmp_path):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from clientbase.config import ExecutionConfig
    from flows.pipeline import make_task_runner

    settings = load_settings(tmp_path)
    assert settings.execution == ExecutionConfig(task_runner="threads", workers=2, dask_address=None)
    threads = make_task_runner(settings.execution)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 2

    write(tmp_path, "execution:\n  task_runner: dask\n  workers: 3\n")
    local = make_task_runner(load_settings(tmp_path).execution)
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True,
                                    "dashboard_address": None}

    write(tmp_path, "execution:\n  task_runner: dask\n  dask_address: tcp://10.0.0.5:8786\n")
    remote = make_task_runner(load_settings(tmp_path).execution)
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    assert remote.cluster_kwargs == {}


def test_execution_address_without_dask_is_an_error(tmp_path):
    path = write(tmp_path, "execution:\n  dask_address: tcp://10.0.0.5:8786\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert str(err.value).startswith(f"{path}: invalid configuration: key 'execution': Value error, dask_address is "
                                     "set but task_runner is not 'dask'")


def test_duckdb_memory_limit_reaches_the_warehouse_and_a_bad_one_is_named(tmp_path):
    from warehouse.db import open_warehouse

    def limit(settings) -> str:
        with open_warehouse(settings) as con:
            return con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]

    write(tmp_path, "execution:\n  duckdb_memory_limit: 1536MiB\n")
    assert limit(load_settings(tmp_path)) == "1.5 GiB"
    write(tmp_path, "execution:\n  duckdb_memory_limit: 2GiB\n")
    assert limit(load_settings(tmp_path)) == "2.0 GiB"  # a setting of the database: the next run's value applies

    path = write(tmp_path, "execution:\n  duckdb_memory_limit: lots\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert str(err.value).startswith(f"{path}: invalid configuration: key 'execution.duckdb_memory_limit': String "
                                     "should match pattern")


def test_stage_fingerprint_follows_what_staging_depends_on_only(tmp_path):
    """Staging is kept (or only appended to, for new bank files) while this fingerprint is unchanged: it must move
    with every input of staging besides the files (the settings stage reads, the FX rates and overrides files) and
    stay put for the rest (as-of, mart settings)."""
    from flows.staging_step import stage_fingerprint

    base = stage_fingerprint(load_settings(tmp_path, as_of=dt.date(2026, 1, 31)))
    assert stage_fingerprint(load_settings(tmp_path, as_of=dt.date(2026, 2, 28))) == base
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "config.yaml").write_text("economics:\n  default_margin: 0.5\n")
    assert stage_fingerprint(load_settings(tmp_path)) == base
    changed = []
    for config in ("classification:\n  own_accounts: [DE89370400440532013000]\n", "identity:\n  fuzzy_threshold: 95\n",
                   "fx:\n  max_rate_age_days: 3\n", "reporting_currency: USD\n", "economics:\n  payment_terms_days: 14\n"):
        (tmp_path / "inbox" / "config.yaml").write_text(config)
        changed.append(stage_fingerprint(load_settings(tmp_path)))
    (tmp_path / "inbox" / "config.yaml").unlink()
    for name, text in (("fx_rates.csv", "date,currency,rate\n2026-01-02,USD,0.9\n"),
                       ("client_overrides.csv", "counterparty_key,client_id\nname:acme,C1\n")):
        (tmp_path / "inbox" / name).write_text(text)
        changed.append(stage_fingerprint(load_settings(tmp_path)))
    assert len({base, *changed}) == len(changed) + 1


@pytest.mark.parametrize(("text", "message"), [
    ("economics:\n  abc_a: 0.95\n  abc_b: 0.80\n", r"abc_a \(0.95\) must be below abc_b \(0.8\)"),
    ("economics:\n  xyz_x: 0.3\n", r"xyz_x \(0.3\) must not be above xyz_y"),
    ("economics:\n  xyz_min_months: 13\n", r"xyz_min_months \(13\) is more than the window_months \(12\)"),
    ("behaviour:\n  dependency_severe: 0.6\n", r"dependency_diversify < dependency_severe < dependency_critical"),
    ("behaviour:\n  regular_months: 7\n", r"regular_months \(7\) is more than regular_window_months \(6\)"),
    ("behaviour:\n  at_risk_factor: 0.5\n", r"key 'behaviour.at_risk_factor'"),
])
def test_thresholds_out_of_order_are_refused(tmp_path, text, message):
    write(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path)


def test_every_domain_threshold_is_a_setting(tmp_path):
    write(tmp_path, "economics:\n  pareto_reach: 0.7\n  xyz_min_months: 4\n  ltv_min_segment: 5\n"
                    "behaviour:\n  at_risk_factor: 1.5\n  regular_months: 2\n  regular_window_months: 4\n"
                    "  exclusive_share_of_wallet: 0.9\n")
    settings = load_settings(tmp_path)
    assert (settings.economics.pareto_reach, settings.economics.xyz_min_months,
            settings.economics.ltv_min_segment) == (0.7, 4, 5)
    b = settings.behaviour
    assert (b.at_risk_factor, b.regular_months, b.regular_window_months, b.exclusive_share_of_wallet) == (
        1.5, 2, 4, 0.9)


def test_the_readme_config_example_loads(tmp_path):
    """The example in README.md is a valid config file whose defaults are what it says they are."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    example = next(block for block in readme.split("```yaml\n")[1:] if block.startswith("reporting_currency:"))
    write(tmp_path, example.split("```")[0])
    settings = load_settings(tmp_path)
    defaults = load_settings(tmp_path / "elsewhere")
    assert settings.economics == defaults.economics  # "defaults shown"
    assert settings.behaviour == defaults.behaviour
    assert settings.segments[0].team == "upsell"


@pytest.mark.parametrize(("rates", "message"), [
    ("date,currency,rate\n2026-01-02,USD,0.9\n2026-01-02,IDR,0\n",
     r"fx_rates.csv, line 3: the rate of IDR on 2026-01-02 is 0; a rate must be positive"),
    ("date,currency,rate\n2026-01-02,USD,0.9\n2026-01-03,USD,0.91\n2026-01-02,usd,0.92\n",
     r"fx_rates.csv, lines 2 and 4: two rates of USD on 2026-01-02 \(0.9, 0.92\); keep one"),
])
def test_fx_rates_are_positive_and_one_a_day(tmp_path, rates, message):
    from flows.staging_step import _stage_lookups

    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "fx_rates.csv").write_text(rates)
    with pytest.raises(ConfigError, match=message):
        _stage_lookups(load_settings(tmp_path))


def test_fx_rates_keep_twelve_decimals(tmp_path):
    from decimal import Decimal

    from flows.staging_step import _stage_lookups

    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "fx_rates.csv").write_text("date,currency,rate\n2026-01-02,IDR,0.0000571234\n")
    rates, _ = _stage_lookups(load_settings(tmp_path))
    assert rates.collect()["rate"].item() == Decimal("0.0000571234")


def test_overrides_that_cannot_apply_are_named_in_the_log(tmp_path, caplog):
    import logging

    import polars as pl

    from flows.staging_step import _unknown_overrides

    (tmp_path / "inbox").mkdir()
    settings = load_settings(tmp_path)
    overrides = pl.LazyFrame({"counterparty_key": ["name:a", "name:b", "name:c", "acct:LT11", "acct:LT99",
                                                   identity.name_digest("dora")],
                              "client_id": ["C1", "C9", "-", "C2", "C2", "C1"]})
    crm = pl.LazyFrame({"client_id": ["C1", "C2"]})
    # the account LT11 was seen with a tax id: its rows are that tax id's counterparty
    groups = pl.DataFrame([(None, None, "a", "name:a"), (None, None, "b", "name:b"), (None, None, "c", "name:c"),
                           ("7707083893", "LT11", "x", "tax:7707083893"), (None, "LT11", "x", "tax:7707083893"),
                           # the name was seen alone once; now also with an account: its rows have the account's key
                           (None, "LT12", "dora", "acct:LT12"), (None, None, "dora", "acct:LT12")],
                          schema=identity.GROUPS_SCHEMA, orient="row")
    with caplog.at_level(logging.WARNING, logger="clientbase"):
        _unknown_overrides(settings, overrides, crm, groups)
        _unknown_overrides(settings, overrides, None, groups)
    path = tmp_path / "inbox" / "client_overrides.csv"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}, line 3: override of name:b ignored: the CRM has no client 'C9' (use '-' for 'no CRM client')",
        f"{path}, line 5: override of acct:LT11 ignored: no counterparty has that key; its rows belong to "
        "tax:7707083893 now: use that key",
        f"{path}, line 6: override of acct:LT99 ignored: no counterparty has that key",
        f"{path}, line 7: override of {identity.name_digest('dora')} ignored: no counterparty has that key; its "
        "rows belong to acct:LT12 now: use that key",
        f"{path}: 6 override(s) ignored: there is no CRM to match to (bank-only mode)"]
