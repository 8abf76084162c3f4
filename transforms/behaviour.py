"""Client behaviour over time (DOMAIN §4-5): regularity (XYZ), activity and retention. Pure functions."""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms import metrics as m


def daily_payments(payments: pl.LazyFrame) -> pl.LazyFrame:
    """client_id, booking_date, amount_reporting: one row per client and payment day, the day's payments summed.
    First purchases, retention, the ladder, the activity gaps and the CLV summary see no finer grain."""
    return payments.group_by("client_id", "booking_date").agg(pl.col("amount_reporting").sum())


def first_purchases(payments: pl.LazyFrame) -> pl.LazyFrame:
    """client_id, first_payment: each client's first booked incoming payment ever."""
    return payments.group_by("client_id").agg(pl.col("booking_date").min().alias("first_payment"))


def xyz(client_month: pl.LazyFrame, first: pl.LazyFrame, *, window: tuple[dt.date, dt.date], x: float = 0.10,
        y: float = 0.25, min_months: int = 3) -> pl.LazyFrame:
    """client_id, xyz_months, revenue_cv, xyz (DOMAIN §4).

    Monthly net revenue from the later of the window start and the client's first purchase to the window end,
    months without purchases counting as 0; CV = population standard deviation / mean. X: CV <= x, Y: <= y,
    Z: above; fewer than ``min_months`` months, or no revenue at all, gives no class (null), not a guess.
    """
    start, end = window
    # a client's months run from the later of the window start and its first purchase month to the window end;
    # months without a row add 0 to both sums, so only the client's rows in that span are read (no grid of every
    # client's months joined to them: 10M bench, 250k clients, 1.6 s -> 0.4 s)
    span = (
        first.filter(pl.col("first_payment") <= m.month_end(end))
        .select("client_id", _from=pl.max_horizontal(pl.col("first_payment").dt.truncate("1mo"), pl.lit(start)))
    )
    months = (end.year * 12 + end.month) - (pl.col("_from").dt.year().cast(pl.Int32) * 12
                                            + pl.col("_from").dt.month().cast(pl.Int32)) + 1
    # CV = std / mean (population std) = sqrt(n * sum(x^2) - sum(x)^2) / sum(x), with the sums exact in
    # integer cents so the result does not depend on row order
    sums = (
        client_month.filter(pl.col("month").is_between(start, end))
        .select("client_id", "month", _x=m.cents(pl.col("net_revenue")))
        .join(span, on="client_id", how="inner")
        .filter(pl.col("month") >= pl.col("_from"))
        .group_by("client_id")
        .agg(_sum=pl.col("_x").sum(), _sum_sq=(pl.col("_x") * pl.col("_x")).sum())
    )
    per_client = (
        span.select("client_id", xyz_months=months.cast(pl.Int32))
        .join(sums, on="client_id", how="left")
        .with_columns(pl.col("_sum", "_sum_sq").fill_null(0))
    )
    spread = (pl.col("xyz_months").cast(pl.Int128) * pl.col("_sum_sq") - pl.col("_sum") * pl.col("_sum"))
    cv = pl.when((pl.col("xyz_months") >= min_months) & (pl.col("_sum") > 0)).then(
        spread.cast(pl.Float64).clip(lower_bound=0).sqrt() / pl.col("_sum").cast(pl.Float64))
    return per_client.with_columns(revenue_cv=cv).with_columns(
        xyz=pl.when(pl.col("revenue_cv").is_null()).then(pl.lit(None, pl.String))
        .when(pl.col("revenue_cv") <= x).then(pl.lit("X"))
        .when(pl.col("revenue_cv") <= y).then(pl.lit("Y"))
        .otherwise(pl.lit("Z"))
    ).select("client_id", "xyz_months", "revenue_cv", "xyz")


def periods(first_month: dt.date, last_month: dt.date) -> pl.LazyFrame:
    """period_type (month | quarter | year), period_start, period_end for every full period in the range."""
    months = pl.date_range(first_month, last_month, interval="1mo", eager=True)
    rows = []
    for kind, size in (("month", 1), ("quarter", 3), ("year", 12)):
        for start in months:
            if (kind == "quarter" and (start.month - 1) % 3) or (kind == "year" and start.month != 1):
                continue
            nxt = start
            for _ in range(size):
                nxt = m.next_month(nxt)
            if nxt <= m.next_month(last_month):
                rows.append((kind, start, nxt - dt.timedelta(days=1)))
    return pl.LazyFrame(rows, schema={"period_type": pl.String, "period_start": pl.Date, "period_end": pl.Date},
                        orient="row")


def retention(payments: pl.LazyFrame, period_frame: pl.LazyFrame, *, window_days: int,
              first: pl.LazyFrame | None = None, refunds: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Per period: S, E, N, CRR, churned, reactivated, churn rate, gross and net revenue retention.

    S: clients active at the end of the day before the period; E: active at its last day; N: clients whose
    first ever payment falls inside it. CRR = (E - N) / S x 100. Churned: active at the start, not at the end;
    reactivated: neither new nor active at the start, active at the end (won back). Revenue retention compares
    what the S clients brought in the period with what they brought in the period before it (previous month,
    quarter or year): net = sum(now) / sum(before); gross = sum(min(now, before)) / sum(before). A client's
    revenue in a period is its net revenue (DOMAIN §1: payments less ``refunds``, the booked refund rows with
    their negative amounts), at least 0: a refund can cancel a period's revenue, not make it a negative base.
    Only payments make a client active.

    Each client's activity on the periods' boundary days is one bit per day (``_ActiveDays``), so the counts
    are sums over one row per client instead of joins over one row per client per period. ``first``:
    ``first_purchases(payments)`` when the caller has it already (computed here otherwise).
    """
    bounds = period_frame.collect().with_columns(_before=pl.col("period_start") - dt.timedelta(days=1))
    days = _ActiveDays(sorted({*bounds["_before"], *bounds["period_end"]}))
    first = first_purchases(payments) if first is None else first
    clients = days.active_bits(payments, window_days=window_days).join(first, on="client_id")
    counts = []
    for period in bounds.iter_rows(named=True):
        s, e = days.bit(period["_before"]), days.bit(period["period_end"])
        n = pl.col("first_payment").is_between(period["period_start"], period["period_end"]).fill_null(False)
        key = f"{period['period_type']}|{period['period_start']}"
        counts += [s.sum().alias(f"s|{key}"), e.sum().alias(f"e|{key}"), n.sum().alias(f"n|{key}"),
                   (s & ~e).sum().alias(f"churned|{key}"), (~s & e & ~n).sum().alias(f"reactivated|{key}")]
    totals = clients.select(counts).collect().row(0, named=True) if counts else {}
    flags = pl.LazyFrame([
        {"period_type": p["period_type"], "period_start": p["period_start"], "period_end": p["period_end"],
         **{name: totals[f"{part}|{p['period_type']}|{p['period_start']}"] for name, part in (
             ("clients_start", "s"), ("clients_end", "e"), ("new_clients", "n"), ("churned", "churned"),
             ("reactivated", "reactivated"))}}
        for p in bounds.iter_rows(named=True)],
        schema={"period_type": pl.String, "period_start": pl.Date, "period_end": pl.Date,
                **dict.fromkeys(("clients_start", "clients_end", "new_clients", "churned", "reactivated"), pl.Int32)})
    # revenue of each S client in the period and in the period just before it (exact cents)
    # read twice below (each period and the period before): collected once (10M payments: 6.6M rows, ~0.3 GB),
    # else each read would group the payments again
    revenue = _period_revenue(payments if refunds is None else pl.concat(
        [payments.select("client_id", "booking_date", "amount_reporting"),
         refunds.select("client_id", "booking_date", "amount_reporting")])).collect().lazy()
    both = (pl.concat([revenue.with_columns(_prev=pl.lit(0, pl.Int128)).rename({"_revenue": "_now"}),
                       _shift_to_next_period(revenue).with_columns(_now=pl.lit(0, pl.Int128))
                       .rename({"_revenue": "_prev"}).select("period_type", "period_start", "client_id", "_now",
                                                             "_prev")], how="vertical_relaxed")
            .group_by("period_type", "period_start", "client_id").agg(pl.col("_now", "_prev").sum()))
    at_start = (both.join(bounds.lazy().select("period_type", "period_start", "_before")
                          .join(days.frame.lazy(), left_on="_before", right_on="day"),
                          on=["period_type", "period_start"])
                .join(clients.select("client_id", *days.words), on="client_id")
                .filter(days.bit_of_row()))
    money = at_start.group_by("period_type", "period_start").agg(
        _prev_s=pl.col("_prev").sum(), _now_s=pl.col("_now").sum(), _kept_s=pl.min_horizontal("_now", "_prev").sum())
    return (
        flags.join(money, on=["period_type", "period_start"], how="left")
        .with_columns(
            crr=pl.when(pl.col("clients_start") > 0).then(
                (pl.col("clients_end") - pl.col("new_clients")) / pl.col("clients_start") * 100),
            churn_rate=pl.when(pl.col("clients_start") > 0).then(pl.col("churned") / pl.col("clients_start")),
            net_revenue_retention=m.ratio(pl.col("_now_s").fill_null(0), pl.col("_prev_s").fill_null(0)),
            gross_revenue_retention=m.ratio(pl.col("_kept_s").fill_null(0), pl.col("_prev_s").fill_null(0)),
        )
        .drop("_prev_s", "_now_s", "_kept_s")
        .sort("period_type", "period_start")
    )


class _ActiveDays:
    """The periods' boundary days as bits: day i is bit i % 62 of the Int64 word column ``_w<i // 62>``."""

    BITS = 62  # 2^62 still fits an Int64, so a word's bit ranges are differences of powers of two

    def __init__(self, days: list[dt.date]):
        self.days = pl.Series("day", days, dtype=pl.Date)
        self.frame = pl.DataFrame({"day": days, "_word": [i // self.BITS for i in range(len(days))],
                                   "_bit": [1 << (i % self.BITS) for i in range(len(days))]},
                                  schema={"day": pl.Date, "_word": pl.Int32, "_bit": pl.Int64})
        self.index = {day: i for i, day in enumerate(days)}
        self.words = [f"_w{w}" for w in range(max(1, -(-len(days) // self.BITS)))]

    def active_bits(self, payments: pl.LazyFrame, *, window_days: int) -> pl.LazyFrame:
        """client_id and the word columns, for every client that paid: ``metrics.is_active`` on each boundary
        day d, as ranges: 0 <= d - p < window_days for some payment day p, so a payment on day p makes the client
        active on the boundary days in [p, p + window_days), a range of bits found by binary search."""
        paid = payments.select("client_id", pl.col("booking_date").alias("_paid")).unique().with_columns(
            _lo=pl.lit(self.days).search_sorted(pl.col("_paid"), side="left").cast(pl.Int64),
            _hi=pl.lit(self.days).search_sorted(pl.col("_paid") + dt.timedelta(days=window_days),
                                                side="left").cast(pl.Int64))

        def power(exponent: pl.Expr) -> pl.Expr:
            return pl.lit(2, pl.Int64).pow(exponent)

        words = []
        for w, name in enumerate(self.words):
            lo = pl.col("_lo").clip(w * self.BITS, (w + 1) * self.BITS) - w * self.BITS
            hi = pl.col("_hi").clip(w * self.BITS, (w + 1) * self.BITS) - w * self.BITS
            words.append(pl.when(hi > lo).then(power(hi) - power(lo)).otherwise(0).bitwise_or().alias(name))
        return paid.group_by("client_id").agg(words)

    def bit(self, day: dt.date) -> pl.Expr:
        """Whether the client was active on ``day``."""
        i = self.index[day]
        return (pl.col(self.words[i // self.BITS]) & (1 << (i % self.BITS))) != 0

    def bit_of_row(self) -> pl.Expr:
        """The same test with the day given per row by its ``_word`` and ``_bit`` columns."""
        word = pl.lit(0, pl.Int64)
        for w, name in reversed(list(enumerate(self.words))):
            word = pl.when(pl.col("_word") == w).then(pl.col(name)).otherwise(word)
        return (word & pl.col("_bit")) != 0


_EVERY = {"month": "1mo", "quarter": "1q", "year": "1y"}


def previous_period_start(period_type: str, start: dt.date) -> dt.date:
    """The first day of the period before the ``period_type`` period starting on ``start``."""
    return pl.select(pl.lit(start).dt.offset_by(f"-{_EVERY[period_type]}")).item()


def _period_revenue(money: pl.LazyFrame) -> pl.LazyFrame:
    """period_type, period_start, client_id, _revenue for every month, quarter and year a client paid in (or
    was refunded in): the sum of ``money``'s amounts, at least 0.

    The amounts are summed per client and month once; a quarter or a year adds up its months (integer cents,
    so the sums are exact in any grouping: see metrics.ratio), and each period's sum is then floored at 0."""
    months = (money.group_by(pl.col("booking_date").dt.truncate("1mo").alias("period_start"), "client_id")
              .agg(m.cents(pl.col("amount_reporting")).sum().alias("_revenue")))
    return pl.concat([
        (months.select(pl.lit(kind).alias("period_type"), "period_start", "client_id", "_revenue") if kind == "month"
         else months.group_by(pl.lit(kind).alias("period_type"), pl.col("period_start").dt.truncate(every),
                              "client_id").agg(pl.col("_revenue").sum()))
        .with_columns(pl.col("_revenue").clip(lower_bound=0))
        for kind, every in _EVERY.items()
    ])


def _shift_to_next_period(revenue: pl.LazyFrame) -> pl.LazyFrame:
    """The same revenue keyed by the following period, to read 'the period before' with a join."""
    return pl.concat([
        revenue.filter(pl.col("period_type") == kind).with_columns(pl.col("period_start").dt.offset_by(every))
        for kind, every in _EVERY.items()
    ])


def cohorts(client_month: pl.LazyFrame, first: pl.LazyFrame) -> pl.LazyFrame:
    """cohort_month, months_since, cohort_size, active_clients, retention_rate, revenue.

    Cohort: the month of the first ever payment; a client is active in a month when it paid in that month.
    """
    with_cohort = (
        client_month.filter(pl.col("revenue") > 0)
        .join(first.with_columns(cohort_month=pl.col("first_payment").dt.truncate("1mo")), on="client_id")
        .with_columns(months_since=((pl.col("month").dt.year() - pl.col("cohort_month").dt.year()) * 12
                                    + pl.col("month").dt.month() - pl.col("cohort_month").dt.month()).cast(pl.Int32))
    )
    sizes = first.group_by(pl.col("first_payment").dt.truncate("1mo").alias("cohort_month")).agg(
        cohort_size=pl.len().cast(pl.Int32))
    return (
        with_cohort.group_by("cohort_month", "months_since")
        .agg(active_clients=pl.col("client_id").n_unique().cast(pl.Int32),
             revenue=pl.col("net_revenue").sum().cast(m.MONEY))
        .join(sizes, on="cohort_month")
        .with_columns(retention_rate=pl.col("active_clients") / pl.col("cohort_size"))
        .select("cohort_month", "months_since", "cohort_size", "active_clients", "retention_rate", "revenue")
        .sort("cohort_month", "months_since")
    )


def activity(days: pl.LazyFrame, *, as_of: dt.date, at_risk_factor: float, window_days: int) -> pl.LazyFrame:
    """client_id, last_payment_date, days_since_last_payment, usual_gap_days, is_at_risk (DOMAIN §5), from the
    booked payments summed per client and day (``daily_payments``: each payment day once).

    The usual gap is the median number of days between a client's payment days (null with fewer than three
    payment days). At risk: silent for more than ``at_risk_factor`` times its usual gap, yet still inside the
    activity window — slipping, not yet lost.
    """
    # each client's payment days in order, as a list of day numbers: no sort of every row and no window over the
    # clients (the 3M bench's 2.0M client days: 1.3-1.7 s -> 0.7-0.8 s, the same frame; without a per-client
    # unique, the days being distinct already, 10M: ~4.4 -> ~3.3 s beside a full run)
    lists = (days.filter(pl.col("booking_date") <= as_of).group_by("client_id")
             .agg(_day_list=pl.col("booking_date").cast(pl.Int32).sort()))
    since = (pl.lit(as_of) - pl.col("last_payment_date")).dt.total_days().cast(pl.Int32)
    return (
        lists.select("client_id", last_payment_date=pl.col("_day_list").list.last().cast(pl.Date),
                     _median=pl.col("_day_list").list.diff(null_behavior="drop").list.median(),
                     _days=pl.col("_day_list").list.len())
        .with_columns(days_since_last_payment=since,
                      usual_gap_days=pl.when(pl.col("_days") >= 3).then(pl.col("_median")))
        .with_columns(is_at_risk=(pl.col("usual_gap_days").is_not_null()
                                  & (pl.col("days_since_last_payment") > at_risk_factor * pl.col("usual_gap_days"))
                                  & m.is_active(pl.col("days_since_last_payment"), window_days)))
        .select("client_id", "last_payment_date", "days_since_last_payment", "usual_gap_days", "is_at_risk")
    )


def turnover_trend(client_month: pl.LazyFrame, *, as_of: dt.date) -> pl.LazyFrame:
    """client_id, revenue_last_12m, revenue_prev_12m, is_growing (DOMAIN §8: last 12 months above the 12
    before), over full months."""
    last = m.window_bounds(as_of, 12)
    before = m.window_bounds(last[0] - dt.timedelta(days=1), 12)
    revenue = pl.col("net_revenue")
    return (
        client_month.group_by("client_id")
        .agg(revenue_last_12m=revenue.filter(pl.col("month").is_between(*last)).sum().cast(m.MONEY),
             revenue_prev_12m=revenue.filter(pl.col("month").is_between(*before)).sum().cast(m.MONEY))
        .with_columns(is_growing=pl.col("revenue_last_12m") > pl.col("revenue_prev_12m"))
    )


def ltv(client_month: pl.LazyFrame, segments: pl.LazyFrame, *, as_of: dt.date,
        min_segment: int = 30) -> pl.LazyFrame:
    """LTV = S x C x P x T per client (DOMAIN §5), over each client's whole history up to as-of.

    S: average check (net revenue / purchases); C: purchases per month of the client's buying span (first to
    last purchase month, inclusive); P: net profit / net revenue; T: the average buying span in months of the
    clients of its segment (``segments``: client_id, segment), or of all clients when the segment has fewer
    than ``min_segment`` clients.
    """
    months = pl.col("month")
    life = (
        client_month.filter(months <= as_of)
        .group_by("client_id")
        .agg(_revenue=pl.col("net_revenue").sum().cast(pl.Float64), _profit=pl.col("net_profit").sum().cast(pl.Float64),
             _purchases=pl.col("purchases").sum(),
             _first=months.filter(pl.col("purchases") > 0).min(), _last=months.filter(pl.col("purchases") > 0).max())
        .filter(pl.col("_purchases") > 0)
        .with_columns(span_months=((pl.col("_last").dt.year() - pl.col("_first").dt.year()) * 12
                                   + pl.col("_last").dt.month() - pl.col("_first").dt.month() + 1).cast(pl.Int32))
        .join(segments, on="client_id", how="left")
    )
    everyone = m.fmean(pl.col("span_months"))
    t = (pl.when(pl.len().over("segment") >= min_segment).then(m.fmean(pl.col("span_months")).over("segment"))
         .otherwise(everyone))
    return life.with_columns(
        ltv_s=pl.col("_revenue") / pl.col("_purchases"),
        ltv_c=pl.col("_purchases") / pl.col("span_months"),
        ltv_p=pl.when(pl.col("_revenue") > 0).then(pl.col("_profit") / pl.col("_revenue")),
        ltv_t=t,
    ).with_columns(ltv=pl.col("ltv_s") * pl.col("ltv_c") * pl.col("ltv_p") * pl.col("ltv_t")).select(
        "client_id", "ltv_s", "ltv_c", "ltv_p", "ltv_t", "ltv")


LADDER = ("first_purchase", "repeat", "regular", "adherent", "advocate")


def ladder_stage(purchases_total: pl.Expr, months_bought: pl.Expr, regular_by_xyz: pl.Expr, exclusive: pl.Expr,
                 refers: pl.Expr, active: pl.Expr, *, regular_months: int = 3) -> pl.Expr:
    """The loyalty ladder (DOMAIN §6), highest step met; 'lost' when no longer active.

    first_purchase: one purchase; repeat: two or more; regular: purchases in at least ``regular_months`` of the
    last months (``months_bought``: how many of them had one; DOMAIN: 3 of the last 6) or XYZ class X/Y;
    adherent: regular and exclusive (a high CRM share of wallet or the exclusive flag: see ``ladder_history``);
    advocate: regular or adherent and named as referrer by a client who has paid us.
    """
    regular = (months_bought >= regular_months) | regular_by_xyz.fill_null(False)
    return (pl.when(purchases_total.fill_null(0) == 0).then(pl.lit(None, pl.String))
            .when(~active).then(pl.lit("lost"))
            .when(regular & refers.fill_null(False)).then(pl.lit("advocate"))
            .when(regular & exclusive.fill_null(False)).then(pl.lit("adherent"))
            .when(regular).then(pl.lit("regular"))
            .when(purchases_total >= 2).then(pl.lit("repeat"))
            .otherwise(pl.lit("first_purchase")))


def ladder_history(client_month: pl.LazyFrame, payments: pl.LazyFrame, clients: pl.LazyFrame, *,
                   as_of: dt.date, window_days: int, xyz_frame: pl.LazyFrame | None = None,
                   first: pl.LazyFrame | None = None, regular_months: int = 3, regular_window_months: int = 6,
                   exclusive_share: float = 0.8, since: dt.date | None = None) -> pl.LazyFrame:
    """client_id, month, step, step_with_xyz: each client's ladder step at the end of every month from its
    first purchase to as-of. ``step`` uses the months rule for 'regular' (purchases in ``regular_months`` of
    the last ``regular_window_months``, the month itself included; the same rule every month, so moves are
    comparable); ``step_with_xyz`` also counts XYZ class X or Y as regular (``xyz_frame``: client_id, xyz — an
    as-of measure, so only its as-of month is meaningful: the scorecard's ladder stage). Adherent: a CRM share
    of wallet of at least ``exclusive_share`` or the exclusive flag. ``first``: ``first_purchases(payments)``
    when the caller has it already (computed here otherwise).

    ``since`` (a month start): only the months from it, equal to those rows of the whole history. A step reads
    the months before only through a client's purchases up to then, its last payment day and its purchase months
    in the regular window, so the months before the window are summed up instead of walked month by month."""
    month_end = pl.col("month").dt.offset_by("1mo") - dt.timedelta(days=1)
    last_month = as_of.replace(day=1)
    first = first_purchases(payments) if first is None else first
    from_month = pl.col("first_payment").dt.truncate("1mo")

    def last_days(days: pl.LazyFrame) -> pl.LazyFrame:
        return days.group_by("client_id", pl.col("booking_date").dt.truncate("1mo").alias("month")).agg(
            pl.col("booking_date").max().alias("_last_in_month"))

    bought = client_month.select("client_id", "month", pl.col("purchases"))
    if since is None:
        grid = first.with_columns(month=pl.date_ranges(from_month, pl.lit(last_month), interval="1mo"))
        last_day = last_days(payments)
        prior = None
    else:  # walked from the regular window's first month; the months before summed up per client
        start = pl.select(pl.lit(since).dt.offset_by(f"-{regular_window_months - 1}mo")).item()
        grid = first.with_columns(month=pl.date_ranges(pl.max_horizontal(from_month, pl.lit(start)),
                                                       pl.lit(last_month), interval="1mo"))
        earlier = pl.col("month") < start
        # the payment days before the walk only as each client's last one (no per-month maximum of each)
        last_day = last_days(payments.filter(pl.col("booking_date") >= start))
        prior = (bought.filter(earlier).group_by("client_id").agg(_prior_total=pl.col("purchases").sum())
                 .join(payments.filter(pl.col("booking_date") < start).group_by("client_id")
                       .agg(_prior_last=pl.col("booking_date").max()), on="client_id", how="full", coalesce=True))
    grid = grid.explode("month").drop_nulls("month").select("client_id", "month")  # null: no month to walk
    referrers = (clients.filter(pl.col("referred_by_client_id").is_not_null())
                 .join(first, on="client_id").group_by(pl.col("referred_by_client_id").alias("client_id"))
                 .agg(pl.col("first_payment").min().alias("_referral_paid")))
    wallet = clients.select("client_id", (pl.col("share_of_wallet").cast(pl.Float64, strict=False) >= exclusive_share)
                            .fill_null(False) | pl.col("is_exclusive").fill_null(False)).rename(
        {"share_of_wallet": "_exclusive"})
    frame = grid.join(bought, on=["client_id", "month"], how="left").join(last_day, on=["client_id", "month"],
                                                                        how="left")
    frame = (frame.with_columns(_prior_total=pl.lit(0), _prior_last=pl.lit(None, pl.Date)) if prior is None
             else frame.join(prior, on="client_id", how="left"))
    frame = (
        frame.join(referrers, on="client_id", how="left")
        .join(wallet, on="client_id", how="left")
        .join(xyz_frame.select("client_id", "xyz") if xyz_frame is not None
              else first.select("client_id", pl.lit(None, pl.String).alias("xyz")), on="client_id", how="left")
        .sort("month")  # each client's months in order: what the windows over a client need (not by client: slow)
        .with_columns(pl.col("purchases").fill_null(0))
        .with_columns(
            _total=pl.col("purchases").cum_sum().over("client_id") + pl.col("_prior_total").fill_null(0),
            _months=(pl.col("purchases") > 0).cast(pl.Int32).rolling_sum(regular_window_months, min_samples=1)
            .over("client_id"),
            _last=pl.coalesce(pl.col("_last_in_month").forward_fill().over("client_id"), "_prior_last"),
        )
        .with_columns(month_end=pl.min_horizontal(month_end, pl.lit(as_of)))
    )
    active = m.is_active((pl.col("month_end") - pl.col("_last")).dt.total_days(), window_days)
    refers = pl.col("_referral_paid").is_not_null() & (pl.col("_referral_paid") <= pl.col("month_end"))
    steps = {"step": pl.lit(False), "step_with_xyz": pl.col("xyz").is_in(["X", "Y"])}
    if since is not None:
        frame = frame.filter(pl.col("month") >= since)
    return frame.select(
        "client_id", "month",
        *(ladder_stage(pl.col("_total"), pl.col("_months"), by_xyz, pl.col("_exclusive"), refers, active,
                       regular_months=regular_months).alias(name) for name, by_xyz in steps.items()),
    )


def ladder_transitions(history: pl.LazyFrame) -> pl.LazyFrame:
    """month, from_step ('new' before a first purchase), to_step, clients, step_total (clients in to_step)."""
    moves = (history.sort("month")
             .with_columns(from_step=pl.col("step").shift(1).over("client_id").fill_null("new"))
             .rename({"step": "to_step"}))
    return (moves.group_by("month", "from_step", "to_step").agg(clients=pl.len().cast(pl.Int32))
            .with_columns(step_total=pl.col("clients").sum().over("month", "to_step").cast(pl.Int32))
            .sort("month", "from_step", "to_step"))
