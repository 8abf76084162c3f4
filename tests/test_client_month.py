import datetime as dt
from decimal import Decimal

import polars as pl

from transforms import digests
from transforms.marts import client_month

STAGED = {"client_id": pl.String, "booking_date": pl.Date, "amount_reporting": pl.Decimal(18, 2),
          "category": pl.String, "status": pl.String}
ZERO = Decimal("0.00")


def staged(rows):
    return pl.DataFrame(rows, schema=STAGED, orient="row").lazy()


GIVEN = staged([
    ("C1", dt.date(2025, 1, 5), Decimal("100.00"), "client_payment", "BOOK"),
    ("C1", dt.date(2025, 1, 20), Decimal("50.50"), "client_payment", "BOOK"),
    ("C1", dt.date(2025, 1, 25), Decimal("-20.25"), "refund", "BOOK"),
    ("C1", dt.date(2025, 1, 26), Decimal("999.00"), "client_payment", "PDNG"),   # pending: not revenue
    ("C2", dt.date(2025, 1, 31), Decimal("10.00"), "client_payment", "BOOK"),
    ("C2", dt.date(2025, 2, 1), Decimal("-5.00"), "refund", "BOOK"),            # refund-only month
    ("C2", dt.date(2025, 3, 1), Decimal("7.00"), "client_payment", "BOOK"),     # after as-of
    (None, dt.date(2025, 1, 3), Decimal("-300.00"), "other_outgoing", "BOOK"),  # not a client
])


def test_money_per_client_and_month():
    out = client_month.build(GIVEN, as_of=dt.date(2025, 2, 28), reporting_currency="EUR").collect()
    assert out.columns == list(client_month.SCHEMA)
    assert out.select("client_id", "month", "revenue", "refunds", "net_revenue", "purchases", "gross_margin",
                      "net_profit").rows() == [
        ("C1", dt.date(2025, 1, 1), Decimal("150.50"), Decimal("20.25"), Decimal("130.25"), 2, Decimal("39.08"),
         Decimal("39.08")),  # default margin 30% of net revenue, no costs
        ("C2", dt.date(2025, 1, 1), Decimal("10.00"), ZERO, Decimal("10.00"), 1, Decimal("3.00"), Decimal("3.00")),
        ("C2", dt.date(2025, 2, 1), ZERO, Decimal("5.00"), Decimal("-5.00"), 0, Decimal("-1.50"), Decimal("-1.50")),
    ]
    assert dict(out.schema) == {c: t for c, (t, _) in client_month.SCHEMA.items()}


def test_costs_join_their_months_and_make_profit():
    costs = pl.LazyFrame({"client_id": ["C1", "C3"], "month": [dt.date(2025, 1, 1), dt.date(2025, 2, 1)],
                          "communication_cost": [12.5, 30.0], "support_cost": [0.0, 45.0], "minutes": [15.0, 90.0]})
    settlement_costs = pl.LazyFrame({"client_id": ["C1"], "month": [dt.date(2025, 1, 1)],
                                     "collection_cost": [1.234], "bad_debt": [0.0]})
    margins = pl.LazyFrame({"client_id": ["C1"], "margin_rate": [0.5]})
    out = client_month.build(GIVEN, as_of=dt.date(2025, 2, 28), reporting_currency="EUR", costs=costs,
                             settlement_costs=settlement_costs, margins=margins).collect()
    c1 = out.filter(pl.col("client_id") == "C1").row(0, named=True)
    assert (c1["gross_margin"], c1["communication_cost"], c1["collection_cost"], c1["net_profit"],
            c1["hours_spent"]) == (Decimal("65.12"), Decimal("12.50"), Decimal("1.23"), Decimal("51.39"), 0.25)
    # 130.25 x 0.5 = 65.125: money is rounded half to even (banker's rounding), exactly, in Decimal
    # a client who only took our time, never paid: a loss with zero revenue
    c3 = out.filter(pl.col("client_id") == "C3").row(0, named=True)
    assert (c3["revenue"], c3["net_profit"], c3["hours_spent"]) == (ZERO, Decimal("-75.00"), 1.5)


def test_backfill_months_limit():
    out = client_month.build(GIVEN, as_of=dt.date(2025, 3, 31), reporting_currency="EUR",
                             months=(dt.date(2025, 2, 1), dt.date(2025, 3, 1))).collect()
    assert out.select("client_id", "month").rows() == [("C2", dt.date(2025, 2, 1)), ("C2", dt.date(2025, 3, 1))]


def test_does_not_mutate_input():
    before = GIVEN.collect()
    client_month.build(GIVEN, as_of=dt.date(2025, 2, 28), reporting_currency="EUR").collect()
    assert GIVEN.collect().equals(before)


# ---- month-separability: the per-month builds of the pipeline equal the whole build -----------------------

def _history(seed: int = 3, clients: int = 40, days: int = 500):
    """Random staged payments, invoices, activities and tickets over ~16 months, through the real pre-steps."""
    import random

    from transforms import economics

    rnd = random.Random(seed)
    start = dt.date(2024, 1, 1)
    ids = [f"C{i:02d}" for i in range(clients)]
    txns = [(rnd.choice(ids), start + dt.timedelta(days=rnd.randrange(days)),
             Decimal(rnd.randrange(-5_000, 200_000)) / 100, rnd.choice(["client_payment"] * 6 + ["refund"]),
             rnd.choice(["BOOK"] * 9 + ["PDNG"])) for _ in range(3_000)]
    txns = [(c, d, a if cat == "client_payment" else -abs(a), cat, s) for c, d, a, cat, s in txns]
    staged_txns = staged(txns)
    invoices = pl.DataFrame([
        (rnd.choice(ids), f"I{i}", issue, issue + dt.timedelta(days=30), Decimal(rnd.randrange(1_000, 300_000)) / 100,
         rnd.choice(["won"] * 4 + ["lost"]), rnd.choice([None, Decimal(rnd.randrange(0, 1_000)) / 100]))
        for i, issue in enumerate(start + dt.timedelta(days=rnd.randrange(days)) for _ in range(1_500))],
        schema={"client_id": pl.String, "invoice_id": pl.String, "issue_date": pl.Date, "due_date": pl.Date,
                "amount": pl.Decimal(18, 2), "status": pl.String, "cost": pl.Decimal(18, 2)}, orient="row").lazy()
    managers = pl.LazyFrame({"manager_id": ["M1", "M2"], "hourly_cost": [Decimal("60.00"), Decimal("42.50")]})
    activities = pl.LazyFrame({
        "client_id": [rnd.choice(ids) for _ in range(800)],
        "manager_id": [rnd.choice(["M1", "M2", None]) for _ in range(800)],
        "started_at": [dt.datetime(2024, 1, 1, 9) + dt.timedelta(hours=rnd.randrange(days * 24)) for _ in range(800)],
        "duration_minutes": [rnd.choice([None, 5, 17, 45]) for _ in range(800)]})
    tickets = pl.LazyFrame({
        "client_id": [rnd.choice(ids) for _ in range(300)],
        "manager_id": [rnd.choice(["M1", "M2"]) for _ in range(300)],
        "opened_at": [start + dt.timedelta(days=rnd.randrange(days)) for _ in range(300)],
        "minutes_spent": [rnd.choice([10, 33, 120]) for _ in range(300)]})
    clients_ = pl.LazyFrame({"client_id": ids, "industry": [rnd.choice(["transport", "retail", None]) for _ in ids]})
    as_of = start + dt.timedelta(days=days - 20)
    paid = staged_txns.filter((pl.col("category") == "client_payment") & (pl.col("status") == "BOOK")
                              & (pl.col("booking_date") <= as_of))
    settlement = economics.settlement_costs(economics.settlement_parts(invoices, paid, as_of=as_of), as_of=as_of,
                                            cost_of_capital=0.1, write_off_days=90)
    costs = economics.time_costs(activities, tickets, managers, as_of=as_of, default_hourly_cost=50.0,
                                 support_hourly_cost=None)
    margins = economics.margin_rates(invoices, clients_, default_margin=0.3, margin_by_industry={"retail": 0.2})
    return staged_txns, as_of, costs, settlement, margins


def test_concatenated_month_builds_equal_the_whole_build_exactly():
    staged_txns, as_of, costs, settlement, margins = _history()
    whole = client_month.build(staged_txns, as_of=as_of, reporting_currency="EUR", costs=costs,
                               settlement_costs=settlement, margins=margins, default_margin=0.3).collect()
    cut = {name: frame.collect() for name, frame in client_month.month_inputs(
        staged_txns, as_of=as_of, costs=costs, settlement_costs=settlement, margins=margins).items()}
    months = sorted(set().union(*(cut[n]["month"].to_list() for n in ("payments", "costs", "settlement"))))
    assert len(months) >= 16 and months[-1] == as_of.replace(day=1)  # open invoices accrue to the as-of month
    parts = []
    for month in months:
        inputs = {name: client_month.month_part(name, frame, month).lazy() for name, frame in cut.items()}
        parts.append(client_month.build_month(inputs, month, reporting_currency="EUR", default_margin=0.3).collect())
    assert all(part["month"].unique().to_list() == [month] for part, month in zip(parts, months, strict=True))
    assert pl.concat(parts).equals(whole)
    assert whole.height > 500 and whole["bad_debt"].sum() > 0 and whole["collection_cost"].sum() > 0
    assert whole["hours_spent"].sum() > 0 and whole.filter(pl.col("revenue") == 0).height > 0


def test_a_month_partition_is_the_same_whatever_the_input_order():
    """Same rows in another order: the same digests (so the same fingerprints) and bit-identical month files."""
    staged_txns, as_of, costs, settlement, margins = (f.collect().lazy() if isinstance(f, pl.LazyFrame) else f
                                                      for f in _history(seed=5))
    one = client_month.month_inputs(staged_txns, as_of=as_of, costs=costs, settlement_costs=settlement, margins=margins)
    two = client_month.month_inputs(staged_txns.reverse(), as_of=as_of, costs=costs.reverse(),
                                    settlement_costs=settlement.reverse(), margins=margins.reverse())
    one, two = ({name: frame.collect() for name, frame in cut.items()} for cut in (one, two))
    for name in client_month.INPUTS:
        assert not one[name].equals(two[name]) or one[name].height < 2, name  # really another order
        digest = client_month.group_digests if name in client_month.MONTHLESS else client_month.partition_digests
        assert digest(one[name]) == digest(two[name]), name
    month = max(one["costs"]["month"])
    built = [client_month.build_month({name: client_month.month_part(name, cut[name], month).lazy()
                                       for name in client_month.INPUTS}, month, reporting_currency="EUR").collect()
             for cut in (one, two)]
    assert built[0].height > 5 and built[0].equals(built[1])
    assert built[0].to_arrow().to_pydict() == built[1].to_arrow().to_pydict()


def test_a_changed_value_changes_its_months_digest_only():
    staged_txns, as_of, costs, settlement, margins = _history(seed=5)
    payments = client_month.month_inputs(staged_txns, as_of=as_of, costs=costs, settlement_costs=settlement,
                                         margins=margins)["payments"].collect()
    before = client_month.partition_digests(payments)
    row = payments.height // 2
    month = payments["month"][row]
    changed = payments.with_columns(amount_reporting=pl.when(pl.int_range(pl.len()) == row)
                                    .then(pl.col("amount_reporting") + Decimal("0.01"))
                                    .otherwise(pl.col("amount_reporting"))
                                    .cast(payments.schema["amount_reporting"]))
    after = client_month.partition_digests(changed)
    cell = (month, changed.select(client_month.client_group())[row, 0])
    assert len({g for m_, g in before if m_ == month}) > 1  # the month has other groups, which keep their digests
    assert after[cell][0] == before[cell][0] and after[cell] != before[cell]
    assert {k: v for k, v in after.items() if k != cell} == {k: v for k, v in before.items() if k != cell}
    # a month's digest is its groups' added up: the digest of the month's rows taken at once
    whole = digests.by_key(payments.lazy(), "month").collect()
    assert client_month.month_digests(before) == {
        month_: (str(payments.schema), n, h1, h2) for month_, n, h1, h2 in whole.iter_rows()}
    assert client_month.month_digests(after)[month] != client_month.month_digests(before)[month]


def test_a_changed_margin_rate_changes_its_groups_digest_only():
    """Margin rates are not cut by month: every month's partition of a group of clients holds the rates of all its
    clients, so a client's new rate changes that group's digest (in every month) and no other group's."""
    staged_txns, as_of, costs, settlement, margins = _history(seed=5)
    rates = client_month.month_inputs(staged_txns, as_of=as_of, costs=costs, settlement_costs=settlement,
                                      margins=margins)["margins"].collect()
    assert rates.columns == ["client_id", "margin_rate"] and rates["client_id"].is_unique().all()
    before = client_month.group_digests(rates)
    client = rates["client_id"][rates.height // 2]
    after = client_month.group_digests(rates.with_columns(margin_rate=pl.when(pl.col("client_id") == client)
                                                          .then(0.99).otherwise(pl.col("margin_rate"))))
    group = rates.filter(pl.col("client_id") == client).select(client_month.client_group()).item()
    assert len(before) > 5 and after[group] != before[group]
    assert {g: d for g, d in after.items() if g != group} == {g: d for g, d in before.items() if g != group}


def test_a_month_built_from_its_changed_groups_and_the_published_rest_equals_a_whole_build():
    """A night rebuilds only the groups of clients whose inputs changed in a month (a payment settling an old
    invoice changes that client's past months); the other groups' rows come from the published file."""
    staged_txns, as_of, costs, settlement, margins = _history(seed=7)
    cut = {name: frame.collect() for name, frame in client_month.month_inputs(
        staged_txns, as_of=as_of, costs=costs, settlement_costs=settlement, margins=margins).items()}
    month = cut["payments"]["month"].mode().sort()[0]

    def month_of(frames: dict[str, pl.DataFrame]) -> pl.LazyFrame:
        return client_month.build_month({n: client_month.month_part(n, f, month).lazy() for n, f in frames.items()},
                                        month, reporting_currency="EUR")

    published = month_of(cut).collect()
    # a client's payment of the month changes; its group is rebuilt, every other group is taken over
    client = published["client_id"][published.height // 2]
    changed = {**cut, "payments": cut["payments"].with_columns(
        amount_reporting=pl.when((pl.col("client_id") == client) & (pl.col("month") == month))
        .then(pl.col("amount_reporting") * 2).otherwise(pl.col("amount_reporting")))}
    group = published.filter(pl.col("client_id") == client).select(client_month.client_group()).item()
    groups = set(published.select(client_month.client_group()).to_series().to_list())
    assert len(groups) > 5
    rebuilt = month_of({n: f.filter(client_month.client_group() == group) for n, f in changed.items()})
    merged = client_month.merge_groups(rebuilt, published.lazy(), sorted(groups - {group})).collect()
    whole = month_of(changed).collect()
    assert merged.equals(whole) and not whole.equals(published)
    assert merged.filter(pl.col("client_id") == client)["revenue"].item() == 2 * published.filter(
        pl.col("client_id") == client)["revenue"].item()
    # a group that has no rows any more (its clients gone from the month) is not taken over
    assert client_month.merge_groups(rebuilt, published.lazy(), []).collect().equals(
        whole.filter(client_month.client_group() == group))
