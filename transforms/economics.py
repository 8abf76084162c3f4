"""The cost of serving each client (DOMAIN §1), as events dated to a month. Pure functions, no I/O.

- ``settle_invoices``: which payment settled which invoice, first in first out per client (oldest due invoice
  is paid first, the usual accounting convention, and vectorised as an as-of join on cumulative amounts:
  ``match_invoices``), and from that the days late, the financing cost of lateness, overdue amounts and bad
  debt as of a day (``price_settlement``);
- ``settlement_costs``: those costs dated to the months they fall in: a late invoice's financing cost accrues
  day by day while it is late, so each month carries the part for its days late; bad debt falls in the
  write-off month;
- ``time_costs``: communication (CRM activities) and support (tickets) time, priced at the hourly cost of the
  person who spent it (time-driven activity-based costing);
- ``margin_rates``: each client's gross margin share from its invoices' cost, else the industry default, else
  the overall default.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms import metrics as m

SETTLEMENT_SCHEMA = {
    "client_id": pl.String, "invoice_id": pl.String, "issue_date": pl.Date, "due_date": pl.Date,
    "amount": m.MONEY, "paid_date": pl.Date, "open_amount": m.MONEY, "days_late": pl.Int32,
    "late_cost_per_day": pl.Float64, "collection_cost": pl.Float64, "bad_debt": m.MONEY, "event_month": pl.Date,
    "written_off": pl.Boolean,
}


def settle_invoices(invoices: pl.LazyFrame, payments: pl.LazyFrame, *, as_of: dt.date, cost_of_capital: float,
                    write_off_days: int) -> pl.LazyFrame:
    """One row per won invoice issued up to ``as_of``.

    ``invoices``: client_id, invoice_id, issue_date, due_date, amount (reporting currency), status.
    ``payments``: client_id, booking_date, amount_reporting (booked incoming client payments up to as_of).
    An invoice is settled on the day the client's cumulative payments first cover its cumulative invoiced
    amount (``match_invoices``); ``price_settlement`` gives the days late and what they cost as of ``as_of``.
    """
    won, paid = settlement_inputs(invoices, payments, as_of=as_of)
    return price_settlement(match_invoices(won, paid), as_of=as_of, cost_of_capital=cost_of_capital,
                            write_off_days=write_off_days)


def settlement_inputs(invoices: pl.LazyFrame, payments: pl.LazyFrame, *,
                      as_of: dt.date) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """What ``match_invoices`` reads: the won invoices issued up to ``as_of`` (client_id, invoice_id, issue_date,
    due_date, amount) and the payments summed per client and booking day (client_id, booking_date,
    amount_reporting). A client's settlement depends on its rows of these two frames alone."""
    won = (
        invoices.filter((pl.col("status") == "won") & (pl.col("issue_date") <= as_of) & (pl.col("amount") > 0)
                        & pl.col("client_id").is_not_null())
        .select("client_id", "invoice_id", "issue_date", "due_date", "amount")
    )
    paid = payments.group_by("client_id", "booking_date").agg(pl.col("amount_reporting").sum())
    return won, paid


MATCH_COLUMNS = ("client_id", "invoice_id", "issue_date", "due_date", "amount", "paid_date", "open_amount")


def match_invoices(won: pl.LazyFrame, paid: pl.LazyFrame) -> pl.LazyFrame:
    """First in first out per client, over ``settlement_inputs``: each invoice with the day it was paid (null
    while open) and the amount still open. Columns ``MATCH_COLUMNS``; a function of each client's rows alone,
    whatever the as-of day (the inputs are cut to it)."""
    won = (
        won.sort("due_date", "issue_date", "invoice_id")  # within each client: the FIFO order
        .with_columns(_end=m.cents(pl.col("amount")).cum_sum().over("client_id"))
        .with_columns(_start=pl.col("_end") - m.cents(pl.col("amount")))
    )
    paid = paid.sort("booking_date").with_columns(
        _paid=m.cents(pl.col("amount_reporting")).cum_sum().over("client_id"))
    totals = paid.group_by("client_id").agg(pl.col("_paid").max().alias("_total_paid"))
    # within each client both sides are in the order of their cumulative amount (increasing): that is the order
    # join_asof needs within each 'by' group. Neither is sorted by client: sorting 10M rows by the client id
    # string took 14 s, by the dates and invoice id 4 s (a running sum over a client keeps the row order).
    settled = (
        won.join_asof(paid.select("client_id", "_paid", pl.col("booking_date").alias("paid_date")),
                      left_on="_end", right_on="_paid", by="client_id", strategy="forward", check_sortedness=False)
        .join(totals, on="client_id", how="left")
        .with_columns(pl.col("_total_paid").fill_null(0))
    )
    open_cents = (pl.col("_end") - pl.max_horizontal("_start", "_total_paid")).clip(0, m.cents(pl.col("amount")))
    return settled.with_columns(open_amount=(open_cents.cast(pl.Decimal(38, 2)) / 100).cast(m.MONEY)).select(
        MATCH_COLUMNS)


def price_settlement(matched: pl.LazyFrame, *, as_of: dt.date, cost_of_capital: float,
                     write_off_days: int) -> pl.LazyFrame:
    """``match_invoices``' rows as of ``as_of`` (columns ``SETTLEMENT_SCHEMA``). Collection cost = amount x
    days late x rate / 365 (``late_cost_per_day`` x days late); an invoice still open accrues it on its open
    amount to ``as_of``, or to its write-off day once it is ``write_off_days`` past due, when its open amount
    becomes bad debt. ``event_month``: the month it was paid or written off (as-of's month while it is open);
    ``settlement_costs`` dates the costs month by month."""
    write_off_day = pl.col("due_date") + dt.timedelta(days=write_off_days)
    is_open = pl.col("paid_date").is_null()
    written_off = is_open & (write_off_day <= as_of)
    days_late = (pl.when(~is_open).then(pl.col("paid_date") - pl.col("due_date"))
                 .when(written_off).then(pl.lit(dt.timedelta(days=write_off_days)))
                 .otherwise(pl.lit(as_of) - pl.col("due_date"))).dt.total_days().cast(pl.Int32)
    return (
        matched.with_columns(days_late=days_late, written_off=written_off)
        .with_columns(late_cost_per_day=m.late_cost_per_day(
            pl.when(is_open).then(pl.col("open_amount")).otherwise(pl.col("amount")), cost_of_capital))
        .with_columns(
            collection_cost=m.late_payment_cost("late_cost_per_day", "days_late"),
            bad_debt=pl.when(pl.col("written_off")).then(pl.col("open_amount")).otherwise(pl.lit(0)).cast(m.MONEY),
            event_month=pl.when(~is_open).then(pl.col("paid_date")).when(pl.col("written_off")).then(write_off_day)
            .otherwise(pl.lit(as_of)).dt.truncate("1mo"),
        )
        .select(list(SETTLEMENT_SCHEMA))
    )


SETTLEMENT_COSTS_SCHEMA = {"client_id": pl.String, "month": pl.Date, "collection_cost": pl.Float64,
                           "bad_debt": pl.Float64}


def settlement_costs(settlement: pl.LazyFrame) -> pl.LazyFrame:
    """One row per client and month with a collection cost or bad debt from ``settle_invoices``' rows.

    Financing cost accrues day by day while an invoice is late, from the day after its due date to the day it
    was paid, written off, or as-of: each calendar month carries the invoice's cost per day x its days late in
    that month. So a month's cost does not wait for the payment, and it stays what it was when the invoice is
    paid later (unless the payment completes a partly paid invoice: its cost is then on the whole amount rather
    than the open part). It is computed from the cost per day, not as a share of the invoice's whole cost, so a
    past month keeps its exact bits while as-of moves (as a share it moved in the last bits every night, and
    every month with an open invoice in it was recomputed as changed). Bad debt falls in the write-off month.
    """
    first = pl.col("due_date") + pl.duration(days=1)
    last = pl.col("due_date") + pl.duration(days=pl.col("days_late"))
    month_end = pl.col("month").dt.month_end()
    days_in_month = (pl.min_horizontal("_last", month_end) - pl.max_horizontal("_first", "month")).dt.total_days() + 1
    accrued = (
        settlement.filter((pl.col("days_late") > 0) & (pl.col("collection_cost") > 0))
        .select("client_id", "late_cost_per_day", _first=first, _last=last)
        .with_columns(month=pl.date_ranges(pl.col("_first").dt.truncate("1mo"), pl.col("_last").dt.truncate("1mo"),
                                           "1mo"))
        .explode("month")
        .group_by("client_id", "month")
        .agg(m.fsum(pl.col("late_cost_per_day") * days_in_month).alias("collection_cost"))
    )
    written_off = (
        settlement.filter(pl.col("written_off") & (pl.col("bad_debt") > 0))
        .group_by("client_id", pl.col("event_month").alias("month"))
        .agg(pl.col("bad_debt").sum().cast(pl.Float64))
    )
    return (
        pl.concat([accrued, written_off], how="diagonal_relaxed")
        .group_by("client_id", "month")
        .agg(m.fsum(pl.col("collection_cost")), m.fsum(pl.col("bad_debt")))
        .select(list(SETTLEMENT_COSTS_SCHEMA))
    )


def time_costs(activities: pl.LazyFrame, tickets: pl.LazyFrame, managers: pl.LazyFrame, *, as_of: dt.date,
               default_hourly_cost: float, support_hourly_cost: float | None) -> pl.LazyFrame:
    """client_id, month, communication_cost, support_cost, minutes (all time spent on the client)."""
    rates = managers.select("manager_id", pl.col("hourly_cost").cast(pl.Float64).alias("_rate"))
    calls = (
        activities.filter(pl.col("started_at").dt.date() <= as_of)
        .join(rates, on="manager_id", how="left")
        .select("client_id", pl.col("started_at").dt.date().dt.truncate("1mo").alias("month"),
                pl.col("duration_minutes").fill_null(0).alias("minutes"),
                pl.col("_rate").fill_null(default_hourly_cost).alias("hourly_cost"))
        .with_columns(communication_cost=m.time_cost(), support_cost=pl.lit(0.0))
    )
    support_rate = (pl.lit(support_hourly_cost) if support_hourly_cost is not None
                    else pl.col("_rate").fill_null(default_hourly_cost))
    support = (
        tickets.filter(pl.col("opened_at") <= as_of)
        .join(rates, on="manager_id", how="left")
        .select("client_id", pl.col("opened_at").dt.truncate("1mo").alias("month"),
                pl.col("minutes_spent").fill_null(0).alias("minutes"), support_rate.cast(pl.Float64).alias("hourly_cost"))
        .with_columns(communication_cost=pl.lit(0.0), support_cost=m.time_cost())
    )
    return (
        pl.concat([calls, support], how="vertical_relaxed")
        .filter(pl.col("client_id").is_not_null())
        .group_by("client_id", "month")
        .agg(m.fsum(pl.col("communication_cost")), m.fsum(pl.col("support_cost")), m.fsum(pl.col("minutes")))
    )


def margin_rates(invoices: pl.LazyFrame, clients: pl.LazyFrame, *, default_margin: float,
                 margin_by_industry: dict[str, float]) -> pl.LazyFrame:
    """client_id, margin_rate, margin_source (invoices | industry | default) for every known client."""
    from_invoices = (
        invoices.filter((pl.col("status") == "won") & pl.col("cost").is_not_null() & (pl.col("amount") > 0))
        .group_by("client_id")
        .agg(((pl.col("amount") - pl.col("cost")).sum().cast(pl.Float64)
              / pl.col("amount").sum().cast(pl.Float64)).alias("_invoice_rate"))
    )
    industry = pl.LazyFrame({"industry": list(margin_by_industry), "_industry_rate": list(margin_by_industry.values())},
                            schema={"industry": pl.String, "_industry_rate": pl.Float64})
    everyone = pl.concat([clients.select("client_id", "industry"),
                          from_invoices.select("client_id", pl.lit(None, pl.String).alias("industry"))]
                         ).unique(subset="client_id", keep="first", maintain_order=True)
    return (
        everyone.join(from_invoices, on="client_id", how="left").join(industry, on="industry", how="left")
        .select("client_id",
                pl.coalesce("_invoice_rate", "_industry_rate", pl.lit(default_margin)).alias("margin_rate"),
                pl.when(pl.col("_invoice_rate").is_not_null()).then(pl.lit("invoices"))
                .when(pl.col("_industry_rate").is_not_null()).then(pl.lit("industry"))
                .otherwise(pl.lit("default")).alias("margin_source"))
    )
