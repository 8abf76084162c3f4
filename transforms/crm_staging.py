"""raw.crm_* -> staging: typed CRM entities.

A CRM dump is a snapshot and several exports may feed one entity (calls from HubSpot, tasks from Salesforce),
so every entity is the union of its files, one row per id, the most recently ingested version winning.
Values that do not parse become null (the raw row stays in raw for inspection); staging never aggregates.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import polars as pl

from transforms import digests
from transforms import metrics as m

_ID = {"managers": "manager_id", "activities": "activity_id", "tickets": "ticket_id", "invoices": "invoice_id",
       "clients": "client_id"}


class RawSlice(NamedTuple):
    """Rows ``offset`` .. ``offset + length`` of a raw entity table in ingest order, with the positions in the whole
    table of the rows ``latest`` leaves out (``dropped_rows``): a slice of the table can then be staged on its
    own, and the slices staged one after another give the rows of the whole table staged at once."""

    offset: int
    length: int
    dropped: pl.Series


def latest(raw: pl.LazyFrame, manifest: pl.LazyFrame, entity: str, part: RawSlice | None = None) -> pl.LazyFrame:
    """One row per entity id from all dumps: the latest ingested file that has the id wins, with its first record
    of it; rows without an id are kept; in ingest and record order. With ``part``, those of its rows.

    When the raw rows are in that order (as ingestion writes them), the rows of an id found once are kept as they
    are, and only the ids whose hash repeats are compared (``digests.where_repeating``; 9.7M invoices of one
    dump, staged: 15.6-21.0 -> 11.3-15.8 s with a window over every id before); other input is sorted first.
    """
    if part is not None:
        first, end = (part.dropped.search_sorted(at) for at in (part.offset, part.offset + part.length))
        dropped = part.dropped.slice(first, end - first)  # positions increase
        return (raw.with_row_index("_position").slice(part.offset, part.length)
                .filter(~pl.col("_position").is_in(dropped.implode())).drop("_position"))
    positioned = _positioned(raw, manifest)
    if not in_ingest_order(positioned):
        positioned = positioned.sort("ingest_seq", "record_number", maintain_order=True)
    return _decided(positioned, entity).filter("_keep").drop("_keep", "ingest_seq")


def dropped_rows(raw: pl.LazyFrame, manifest: pl.LazyFrame, entity: str) -> pl.Series | None:
    """The positions of the raw rows ``latest`` leaves out (older versions of an id), for staging the table in
    slices (``RawSlice``); None when the rows are not in ingest order (``latest`` sorts them first: only the whole
    table can be staged). Reads the id, the file and the record number."""
    positioned = _positioned(raw, manifest)
    if not in_ingest_order(positioned):
        return None
    return (_decided(positioned, entity).with_row_index("_position").filter(~pl.col("_keep"))
            .select("_position").collect().to_series())


def _positioned(raw: pl.LazyFrame, manifest: pl.LazyFrame) -> pl.LazyFrame:
    """The raw rows with their file's ingest order."""
    return raw.join(manifest.select("file_hash", "ingest_seq"), on="file_hash", how="left", maintain_order="left")


def _decided(positioned: pl.LazyFrame, entity: str) -> pl.LazyFrame:
    """``positioned`` (in ingest order) with ``_keep``: whether ``latest`` keeps the row."""
    key = _ID[entity]
    latest_file = pl.col("ingest_seq") == pl.col("ingest_seq").max().over(key)
    first_in_file = pl.struct(key, "ingest_seq").is_first_distinct()
    keep = pl.col(key).is_null() | (latest_file & first_in_file)
    return digests.where_repeating(positioned, pl.col(key), "_keep", keep, True)


def supersede(staged: pl.LazyFrame, new: pl.LazyFrame, entity: str) -> pl.LazyFrame:
    """A staged entity after newer files: ``staged`` (the entity staged from the files before) with every id that
    ``new`` (the same entity staged from the newer files' raw rows alone) has taking ``new``'s row, after all the
    others. Equal to staging every raw row again, as ``latest`` picks per id the row of the latest file, and each
    newer file comes after every older one in ingest order; rows without an id stay. So a night's CRM export
    costs the staged rows plus its own, not every version ever ingested (a nightly full dump adds one per night)."""
    key = _ID[entity]
    replaced = new.select(key).drop_nulls().unique()
    return pl.concat([staged.join(replaced, on=key, how="anti", maintain_order="left"), new])


def in_ingest_order(positioned: pl.LazyFrame) -> bool:
    """Whether the rows are sorted by (ingest_seq, record_number), as ingestion writes the raw tables; reads
    those two columns only."""
    seq, record = pl.col("ingest_seq"), pl.col("record_number")
    step = (seq.diff() > 0) | ((seq.diff() == 0) & (record.diff() > 0))
    return bool(positioned.select(step.slice(1).fill_null(False).all()).collect().item())


def number_text(text: pl.Expr) -> pl.Expr:
    """A CRM number as plain text with a '.' decimal point, whatever the export's convention: '1234,56',
    '1.234,56', '1,234.56', '1 234,56' (also with a no-break or narrow space), "1'234.50". Spaces and
    apostrophes are thousands separators; where both '.' and ',' occur the last one is the decimal point; a
    separator that occurs once is the decimal point ('1,5'), one that occurs several times groups thousands
    ('1.234.567')."""
    t = text.str.replace_all(r"[\s\u00a0\u202f']", "")
    dots, commas = t.str.count_matches(".", literal=True), t.str.count_matches(",", literal=True)
    both, comma_last = (dots > 0) & (commas > 0), t.str.contains(r",[0-9]*$")
    comma_decimal = pl.when(both).then(comma_last).otherwise(commas == 1)
    dot_decimal = pl.when(both).then(~comma_last).otherwise(dots == 1)
    return (pl.when(comma_decimal).then(t.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True))
            .when(dot_decimal).then(t.str.replace_all(",", "", literal=True))
            .otherwise(t.str.replace_all(r"[.,]", "")))


def parse_number(text: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """``number_text(text)`` cast to ``dtype`` (null where it is no number). A text the cast takes as it is, as
    most exports write their numbers ('1234.56'), is one ``number_text`` leaves unchanged (no space, apostrophe
    or comma, at most one point), so only the others go through its regex passes (9.7M invoices, three money
    columns: 6.8-7.3 s -> 2.1-2.2 s)."""
    direct = text.cast(dtype, strict=False)
    return pl.coalesce(direct, number_text(pl.when(direct.is_null()).then(text)).cast(dtype, strict=False))


def _money(column: str) -> pl.Expr:
    """``metrics.MONEY`` or null: not a number, or more than 16 digits before the point."""
    return parse_number(pl.col(column), pl.Decimal(18, 2))


def _number(column: str) -> pl.Expr:
    return parse_number(pl.col(column), pl.Float64)


def _date(column: str) -> pl.Expr:
    return pl.col(column).str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)


def stage_managers(raw: pl.LazyFrame, manifest: pl.LazyFrame, part: RawSlice | None = None) -> pl.LazyFrame:
    return latest(raw, manifest, "managers", part).select(
        "manager_id", "name", "department", _money("hourly_cost").alias("hourly_cost"),
        pl.col("currency").str.to_uppercase())


def stage_activities(raw: pl.LazyFrame, manifest: pl.LazyFrame, part: RawSlice | None = None) -> pl.LazyFrame:
    started = pl.col("started_at").str.slice(0, 16).str.to_datetime("%Y-%m-%dT%H:%M", strict=False)
    return latest(raw, manifest, "activities", part).select(
        "activity_id", "client_id", "manager_id", pl.col("activity_type").str.to_lowercase(),
        pl.coalesce(started, _date("started_at").cast(pl.Datetime("us"))).alias("started_at"),
        _number("duration_minutes").alias("duration_minutes"))


def stage_tickets(raw: pl.LazyFrame, manifest: pl.LazyFrame, part: RawSlice | None = None) -> pl.LazyFrame:
    return latest(raw, manifest, "tickets", part).select(
        "ticket_id", "client_id", "manager_id", _date("opened_at").alias("opened_at"),
        _date("closed_at").alias("closed_at"), _number("minutes_spent").alias("minutes_spent"))


def stage_invoices(raw: pl.LazyFrame, manifest: pl.LazyFrame, part: RawSlice | None = None, *,
                   payment_terms_days: int) -> pl.LazyFrame:
    """Invoices and won deals. ``due_date`` defaults to issue date + payment terms; ``cost`` from ``margin``."""
    amount, cost, margin = _money("amount"), _money("cost"), _money("margin")
    issue = _date("issue_date")
    return latest(raw, manifest, "invoices", part).select(
        "invoice_id", "client_id", issue.alias("issue_date"),
        pl.coalesce(_date("due_date"), issue + dt.timedelta(days=payment_terms_days)).alias("due_date"),
        amount.cast(m.MONEY).alias("amount"), pl.col("currency").str.to_uppercase(),
        pl.coalesce(cost, amount - margin).cast(m.MONEY, strict=False).alias("cost"),  # beyond MONEY: unknown
        pl.col("status").str.to_lowercase().fill_null("won").alias("status"),
    )
