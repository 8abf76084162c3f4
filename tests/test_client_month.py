import datetime as dt
from decimal import Decimal

import polars as pl

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
    settlement = pl.LazyFrame({"client_id": ["C1"], "event_month": [dt.date(2025, 1, 1)],
                               "collection_cost": [1.234], "bad_debt": [Decimal("0.00")]},
                              schema_overrides={"bad_debt": pl.Decimal(18, 2)})
    margins = pl.LazyFrame({"client_id": ["C1"], "margin_rate": [0.5]})
    out = client_month.build(GIVEN, as_of=dt.date(2025, 2, 28), reporting_currency="EUR", costs=costs,
                             settlement=settlement, margins=margins).collect()
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
