import csv
import hashlib

import polars as pl

from clientbase.demo import DemoSpec, generate


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    spec = DemoSpec(clients=40, months=6)
    generate(tmp_path / "a", spec)
    generate(tmp_path / "b", spec)
    generate(tmp_path / "c", DemoSpec(clients=40, months=6, seed=43))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_default_demo_shape(tmp_path):
    summary = generate(tmp_path, DemoSpec())
    assert (summary.clients, summary.months) == (300, 36)
    bank = sorted(p.name for p in (tmp_path / "bank").iterdir())
    assert sum(n.startswith("camt053_") for n in bank) == 36
    assert sum(n.startswith("Umsaetze_") for n in bank) == 36
    heads = {p.read_text(encoding="utf-8")[:200] for p in (tmp_path / "bank").glob("camt053_*.xml")}
    assert any("camt.053.001.02" in h for h in heads) and any("camt.053.001.08" in h for h in heads)

    clients = pl.read_csv(tmp_path / "crm" / "clients.csv", infer_schema=False)
    assert clients.height == 300
    assert clients["referred_by_client_id"].drop_nulls().len() > 10
    assert clients.filter(pl.col("is_demanding") == "true").height > 5
    managers = pl.read_csv(tmp_path / "crm" / "managers.csv")
    assert managers["department"].n_unique() >= 2

    invoices = pl.read_csv(tmp_path / "crm" / "invoices.csv")
    by_client = invoices.group_by("client_id").agg(pl.col("amount").sum()).sort("amount", descending=True)
    top20 = by_client.head(len(by_client) // 5)["amount"].sum() / by_client["amount"].sum()
    assert top20 > 0.6, f"revenue is not Pareto-like enough: top 20% bring {top20:.0%}"
    assert invoices.filter(pl.col("due_date") > pl.col("issue_date")).height == invoices.height

    # churn and win-back: some clients have a gap of 3+ months between invoices
    months = invoices.with_columns(m=pl.col("issue_date").str.to_date().dt.truncate("1mo")).select("client_id", "m")
    gaps = (months.unique().sort("client_id", "m")
            .with_columns(gap=pl.col("m").diff().over("client_id").dt.total_days())
            .filter(pl.col("gap") > 95))
    assert gaps["client_id"].n_unique() > 5

    activities = pl.read_csv(tmp_path / "crm" / "activities.csv")
    assert set(activities["activity_type"].unique()) == {"call", "meeting", "email", "task"}
    assert activities["duration_minutes"].min() > 0


def test_sparkasse_csv_is_cp1252_with_decimal_comma(tmp_path):
    generate(tmp_path, DemoSpec(clients=30, months=6))
    path = next((tmp_path / "bank").glob("Umsaetze_*.csv"))
    with path.open(encoding="cp1252", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    assert rows[0][0] == "Auftragskonto" and rows[0][14] == "Betrag"
    assert all("," in r[14] for r in rows[1:])


def test_scale_option_targets_transaction_count(tmp_path):
    summary = generate(tmp_path, DemoSpec(scale=30_000, months=12))
    assert 21_000 <= summary.bank_transactions <= 39_000
