"""client_month: the money each client brought, month by month.

Grain: one row per client per calendar month in which the client made at least one booked payment or got a
refund, up to the run's as-of date. Amounts are in the reporting currency.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms import metrics as m

NAME = "client_month"
GRAIN = "one row per client per calendar month with at least one booked client payment or refund (up to as-of)"
KEY = ("client_id", "month")
PARTITION_BY = "month"  # one parquet file per month: a backfill rewrites only its months
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "client_id": (pl.String(), "Client: the CRM client_id, or 'bank:<tax|acct|name>:<key>' for a bank-only counterparty"),
    "month": (pl.Date(), "First day of the calendar month"),
    "revenue": (m.MONEY, "Booked incoming payments from the client in the month (gross, reporting currency)"),
    "refunds": (m.MONEY, "Booked payments back to the client in the month, as a positive amount"),
    "net_revenue": (m.MONEY, "revenue - refunds"),
    "purchases": (pl.Int32(), "Number of booked incoming payments from the client in the month"),
    "reporting_currency": (pl.String(), "ISO 4217 code of every amount in the row"),
}


def build(
    staged_txns: pl.LazyFrame,
    *,
    as_of: dt.date,
    reporting_currency: str,
    months: tuple[dt.date, dt.date] | None = None,
) -> pl.LazyFrame:
    """Aggregate staged bank transactions. ``months`` (first days, inclusive) limits a backfill."""
    frame = staged_txns.filter(
        m.is_booked()
        & (m.is_client_payment() | m.is_refund())
        & (pl.col("booking_date") <= as_of)
    ).with_columns(month=m.month_start())
    if months is not None:
        frame = frame.filter(pl.col("month").is_between(months[0], months[1]))
    return (
        frame.group_by("client_id", "month")
        .agg(revenue=m.revenue(), refunds=m.refunds(), purchases=m.purchases())
        .with_columns(
            net_revenue=(pl.col("revenue") - pl.col("refunds")).cast(m.MONEY),
            reporting_currency=pl.lit(reporting_currency),
        )
        .select(list(SCHEMA))
        .sort("month", "client_id")
    )
