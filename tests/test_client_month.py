import datetime as dt
from decimal import Decimal

import polars as pl

from transforms.marts import client_month

STAGED = {"client_id": pl.String, "booking_date": pl.Date, "amount_reporting": pl.Decimal(18, 2),
          "category": pl.String, "status": pl.String}


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


def test_client_month_given_expected():
    out = client_month.build(GIVEN, as_of=dt.date(2025, 2, 28), reporting_currency="EUR").collect()
    assert out.columns == list(client_month.SCHEMA)
    assert out.rows() == [
        ("C1", dt.date(2025, 1, 1), Decimal("150.50"), Decimal("20.25"), Decimal("130.25"), 2, "EUR"),
        ("C2", dt.date(2025, 1, 1), Decimal("10.00"), Decimal("0.00"), Decimal("10.00"), 1, "EUR"),
        ("C2", dt.date(2025, 2, 1), Decimal("0.00"), Decimal("5.00"), Decimal("-5.00"), 0, "EUR"),
    ]
    assert dict(out.schema) == {c: t for c, (t, _) in client_month.SCHEMA.items()}


def test_backfill_months_limit():
    out = client_month.build(GIVEN, as_of=dt.date(2025, 3, 31), reporting_currency="EUR",
                             months=(dt.date(2025, 2, 1), dt.date(2025, 3, 1))).collect()
    assert out.select("client_id", "month").rows() == [("C2", dt.date(2025, 2, 1)), ("C2", dt.date(2025, 3, 1))]


def test_does_not_mutate_input():
    before = GIVEN.collect()
    client_month.build(GIVEN, as_of=dt.date(2025, 2, 28), reporting_currency="EUR").collect()
    assert GIVEN.collect().equals(before)
