"""The cost of serving each client (DOMAIN §1), as events dated to a month. Pure functions, no I/O.

- ``match_invoices``: which payment day paid which part of which invoice, first in first out per client
  (oldest due invoice is paid first, the usual accounting convention, vectorised as as-of joins on cumulative
  amounts); ``invoice_settlement``: from that each invoice's settlement day, days late, open amount and bad
  debt as of a day;
- ``settlement_costs``: the financing cost of lateness and bad debt, dated to the months they fall in: each
  late part accrues day by day while it is late, so each month carries the cost of its days late; bad debt
  falls in the write-off month;
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
    "amount": m.MONEY, "paid_date": pl.Date, "open_amount": m.MONEY, "days_late": pl.Int32, "bad_debt": m.MONEY,
    "event_month": pl.Date, "written_off": pl.Boolean,
}
# one row per part of an invoice paid on one day, and per invoice's open remainder (``match_invoices``)
PARTS_SCHEMA = {
    "client_id": pl.String, "invoice_id": pl.String, "issue_date": pl.Date, "due_date": pl.Date,
    "amount": m.MONEY, "part_amount": m.MONEY, "paid_date": pl.Date, "final": pl.Boolean,
}


def settlement_parts(invoices: pl.LazyFrame, payments: pl.LazyFrame, *, as_of: dt.date) -> pl.LazyFrame:
    """``match_invoices`` of ``settlement_inputs``: which day paid which part of which invoice."""
    return match_invoices(*settlement_inputs(invoices, payments, as_of=as_of))


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
    paid = (payments.group_by("client_id", "booking_date").agg(pl.col("amount_reporting").sum())
            .filter(pl.col("amount_reporting") > 0))
    return won, paid


def match_invoices(won: pl.LazyFrame, paid: pl.LazyFrame) -> pl.LazyFrame:
    """First in first out per client, over ``settlement_inputs``: the parts of each invoice paid on one day,
    in ``PARTS_SCHEMA``, a function of each client's rows alone whatever the as-of day (the inputs are cut to
    it).

    A client's invoices, in FIFO order (due date, issue date, id), cover consecutive ranges of its cumulative
    invoiced amount, and its payment days consecutive ranges of its cumulative paid amount; an invoice part is
    the overlap of one invoice's range with one payment day's, and what no payment covers yet is the invoice's
    open remainder (``paid_date`` null). Every invoice has one ``final`` part: the one that completes it (its
    ``paid_date`` is the day the invoice was settled) or its open remainder; the parts of an invoice add up to
    its amount. A part ends where an invoice or a payment day ends: the final parts are each invoice's first
    payment day reaching its end (an as-of join), the others are the payment days ending inside an invoice
    (an as-of join the other way).
    """
    won = (
        won.sort("due_date", "issue_date", "invoice_id")  # within each client: the FIFO order
        .with_columns(_end=m.cents(pl.col("amount")).cum_sum().over("client_id"))
        .with_columns(_start=pl.col("_end") - m.cents(pl.col("amount")))
    )
    paid = (
        paid.sort("booking_date")
        .with_columns(_paid=m.cents(pl.col("amount_reporting")).cum_sum().over("client_id"))
        .with_columns(_paid_before=pl.col("_paid") - m.cents(pl.col("amount_reporting")))
        .select("client_id", "_paid", "_paid_before", pl.col("booking_date").alias("paid_date"))
    )
    totals = paid.group_by("client_id").agg(pl.col("_paid").max().alias("_total_paid"))
    # within each client both sides are in the order of their cumulative amount (increasing): that is the order
    # join_asof needs within each 'by' group. Neither is sorted by client: sorting 10M rows by the client id
    # string took 14 s, by the dates and invoice id 4 s (a running sum over a client keeps the row order).
    final = (
        won.join_asof(paid, left_on="_end", right_on="_paid", by="client_id", strategy="forward",
                      check_sortedness=False)
        .join(totals, on="client_id", how="left")
        .with_columns(_part=pl.col("_end") - pl.max_horizontal(
            "_start", pl.when(pl.col("paid_date").is_null()).then(pl.col("_total_paid").fill_null(0))
            .otherwise(pl.col("_paid_before"))), final=pl.lit(True))
    )
    inner = (
        paid.join_asof(won, left_on="_paid", right_on="_end", by="client_id", strategy="forward",
                       check_sortedness=False)
        .filter(pl.col("_paid") < pl.col("_end"))  # ends inside an invoice (at an invoice's end: its final part)
        .with_columns(_part=pl.col("_paid") - pl.max_horizontal("_start", "_paid_before"), final=pl.lit(False))
    )
    return pl.concat([
        frame.select("client_id", "invoice_id", "issue_date", "due_date", "amount",
                     part_amount=(pl.col("_part").cast(pl.Decimal(38, 2)) / 100).cast(m.MONEY),
                     paid_date="paid_date", final="final")
        for frame in (final, inner)]).cast(PARTS_SCHEMA)


def continue_match(remainders: pl.LazyFrame, paid: pl.LazyFrame) -> pl.LazyFrame:
    """The parts that replace a match's open remainders when a client's new payment days all come after the days
    it already matched (``PARTS_SCHEMA``): ``remainders`` are the match's ``final`` parts without ``paid_date``,
    ``paid`` the new days in ``settlement_inputs``' shape. With the match's other parts they are the match of all
    the days, so a night need not match a client's whole history again for one more payment.

    Why: a client's invoices in FIFO order cover consecutive ranges of its cumulative invoiced amount, its payment
    days in date order consecutive ranges of its cumulative paid amount. Days after all the matched ones (and the
    same invoices) leave the ranges already paid, and so every paid part, as they were; the new days cover what
    lies beyond the amount paid so far, i.e. the open remainders, which are in FIFO order the unpaid end of the
    invoice paid in part and then the unpaid invoices whole. Matching the remainders as invoices of their open
    amounts against the new days is the same overlap of the same ranges, shifted by the amount paid so far; the
    parts keep their invoice's amount (found by client and invoice id: one remainder per invoice, and the ids are
    unique, as CRM ingestion requires one and staging keeps one row per id)."""
    amounts = remainders.select("client_id", "invoice_id", _amount="amount")
    return (
        match_invoices(remainders.select("client_id", "invoice_id", "issue_date", "due_date", amount="part_amount"),
                       paid)
        .join(amounts, on=["client_id", "invoice_id"], how="left")
        .with_columns(amount="_amount")
        .select(list(PARTS_SCHEMA))
    )


def invoice_settlement(parts: pl.LazyFrame, *, as_of: dt.date, write_off_days: int) -> pl.LazyFrame:
    """Each invoice as of ``as_of`` from its final part (``SETTLEMENT_SCHEMA``): the day it was settled, what is
    still open and how many days late it is (to the day it was paid, to as-of while it is open, to its
    write-off day once it is ``write_off_days`` past due, when its open amount becomes bad debt).
    ``event_month``: the month it was paid or written off (as-of's month while it is open)."""
    write_off_day = _write_off_day(write_off_days)
    is_open = pl.col("paid_date").is_null()
    written_off = _written_off(as_of, write_off_days)
    days_late = (pl.when(~is_open).then(pl.col("paid_date") - pl.col("due_date"))
                 .when(written_off).then(pl.lit(dt.timedelta(days=write_off_days)))
                 .otherwise(pl.lit(as_of) - pl.col("due_date"))).dt.total_days().cast(pl.Int32)
    return (
        parts.filter(pl.col("final"))
        .with_columns(open_amount=pl.when(is_open).then(pl.col("part_amount")).otherwise(pl.lit(0)).cast(m.MONEY),
                      days_late=days_late, written_off=written_off)
        .with_columns(
            bad_debt=pl.when(pl.col("written_off")).then(pl.col("open_amount")).otherwise(pl.lit(0)).cast(m.MONEY),
            event_month=pl.when(~is_open).then(pl.col("paid_date")).when(pl.col("written_off")).then(write_off_day)
            .otherwise(pl.lit(as_of)).dt.truncate("1mo"),
        )
        .select(list(SETTLEMENT_SCHEMA))
    )


SETTLEMENT_COSTS_SCHEMA = {"client_id": pl.String, "month": pl.Date, "collection_cost": pl.Float64,
                           "bad_debt": pl.Float64}


def settlement_costs(parts: pl.LazyFrame, *, as_of: dt.date, cost_of_capital: float, write_off_days: int,
                     paid_late: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """One row per client and month with a collection cost or bad debt, from ``match_invoices``' parts.

    Financing cost is amount x days late x annual cost of capital / 365 for each part of an invoice: a part is
    late from the day after the invoice's due date to the day it was paid; the open remainder to as-of, or to
    its write-off day once the invoice is ``write_off_days`` past due, when it becomes bad debt (in the write-off
    month). So an invoice paid in instalments costs each instalment's own lateness, not its whole amount for the
    last one's. The cost accrues day by day: each calendar month carries the parts' amounts x their days late
    in that month, summed exactly as integer cent-days and priced once per client and month. A month's cost does
    not wait for the payment, and a later payment or a later as-of leaves the months before it exactly as they
    were (a payment splits an open remainder into a paid part and a smaller remainder, with the same cent-days
    up to that day), so the nightly run recomputes only the months that really changed.

    ``paid_late``: ``paid_late_cent_days`` of the parts, if the caller has them (a night reuses those of the
    clients whose parts did not change); the open remainders' grow with as-of and are computed here. The cent-days
    are integers, so their sum over the two is the sum over all parts, to the bit.
    """
    if paid_late is None:
        late_days = late_cent_days(parts, as_of=as_of, write_off_days=write_off_days)
    else:
        open_late = late_cent_days(parts.filter(pl.col("paid_date").is_null()), as_of=as_of,
                                   write_off_days=write_off_days)
        late_days = pl.concat([paid_late, open_late]).group_by("client_id", "month").agg(pl.col("cent_days").sum())
    accrued = late_days.select("client_id", "month",
                               collection_cost=m.late_payment_cost("cent_days", cost_of_capital))
    bad = (
        parts.filter(_written_off(as_of, write_off_days) & (pl.col("part_amount") > 0))
        .group_by("client_id", month=_write_off_day(write_off_days).dt.truncate("1mo"))
        .agg(bad_debt=pl.col("part_amount").sum().cast(pl.Float64))
    )
    return (
        pl.concat([accrued, bad], how="diagonal_relaxed")
        .group_by("client_id", "month")
        .agg(pl.col("collection_cost").sum(), pl.col("bad_debt").sum())  # at most one of each per client-month
        .select(list(SETTLEMENT_COSTS_SCHEMA))
    )


def late_cent_days(parts: pl.LazyFrame, *, as_of: dt.date, write_off_days: int) -> pl.LazyFrame:
    """client_id, month, cent_days: the parts' amounts in cents x their days late in the month, summed exactly
    (Int64). A paid part's are fixed; an open remainder's grow with as-of until its write-off day. Sums of
    these over any split of the parts add up to the sum over all of them."""
    return _cent_days(parts, pl.when(pl.col("paid_date").is_not_null()).then(pl.col("paid_date"))
                      .when(_written_off(as_of, write_off_days)).then(_write_off_day(write_off_days))
                      .otherwise(pl.lit(as_of)))


def paid_late_cent_days(parts: pl.LazyFrame) -> pl.LazyFrame:
    """``late_cent_days`` of the paid parts alone: late up to the day they were paid, whatever the as-of day and
    the settings, so a run can keep them (``settlement_costs(paid_late=)`` adds the open remainders')."""
    return _cent_days(parts.filter(pl.col("paid_date").is_not_null()), pl.col("paid_date"))


def _cent_days(parts: pl.LazyFrame, last: pl.Expr) -> pl.LazyFrame:
    """Each part late from the day after its invoice's due date to ``last``, in cent-days per client and month."""
    month_end = pl.col("month").dt.month_end()
    days_in_month = (pl.min_horizontal("_last", month_end) - pl.max_horizontal("_first", "month")).dt.total_days() + 1
    return (
        parts.select("client_id", _cents=m.cents(pl.col("part_amount")).cast(pl.Int64),
                     _first=pl.col("due_date") + pl.duration(days=1), _last=last)
        .filter((pl.col("_last") >= pl.col("_first")) & (pl.col("_cents") > 0))
        .with_columns(month=pl.date_ranges(pl.col("_first").dt.truncate("1mo"), pl.col("_last").dt.truncate("1mo"),
                                           "1mo"))
        .explode("month")
        .group_by("client_id", "month")
        .agg((pl.col("_cents") * days_in_month).sum().alias("cent_days"))
    )


def _write_off_day(write_off_days: int) -> pl.Expr:
    return pl.col("due_date") + dt.timedelta(days=write_off_days)


def _written_off(as_of: dt.date, write_off_days: int) -> pl.Expr:
    """An open remainder ``write_off_days`` past its invoice's due date at as-of (bad debt since)."""
    return pl.col("paid_date").is_null() & (_write_off_day(write_off_days) <= as_of)


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
