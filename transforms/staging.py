"""raw -> staging: type, deduplicate, convert to the reporting currency, classify, resolve to a client.

Pure ``LazyFrame -> LazyFrame`` functions; no I/O. Staging only renames, casts, dedupes and labels: it never
aggregates (marts do).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from transforms import crm_staging, digests, identity
from transforms import metrics as m

CRM_FLAGS = ("is_potential", "is_reference", "is_innovator", "is_demanding", "is_exclusive")
STAGED_BANK_COLUMNS = (
    "txn_key", "key_method", "fingerprint", "own_account", "booking_date", "value_date", "amount", "currency",
    "fx_rate", "amount_reporting", "status", "is_reversal", "counterparty_name", "counterparty_tax_id",
    "counterparty_account", "counterparty_bic", "purpose", "bank_reference", "end_to_end_id", "counterparty_key",
    "category", "client_id", "match_method", "file_hash", "source_file", "record_number",
)

# what label_rows and classify add to the deduplicated rows (the rest of a staged row is the raw row and
# its keys)
CLASSIFIED_COLUMNS = ("fx_rate", "amount_reporting", "counterparty_key", "category", "client_id", "match_method")


def transaction_keys(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Two keys per transaction, the same whichever file (or format) it arrived in.

    - ``txn_key``: the bank's own reference (AcctSvcrRef / FITID / :61: reference) per account when there is
      one, else the fingerprint;
    - ``fingerprint``: account, booking date, amount, currency and the occurrence number of that combination
      inside its file. Two identical payments on one day in one statement stay two (occurrences 0 and 1), while
      the same day exported twice — as camt.052 and camt.053, or as camt and a CSV without references —
      collapses to one.
    """
    return _keys(raw.with_columns(end_to_end_id=_end_to_end_id()))


def _end_to_end_id() -> pl.Expr:
    """Banks write this placeholder when the payer gave no end-to-end id."""
    return pl.when(pl.col("end_to_end_id").str.to_uppercase() != "NOTPROVIDED").then(pl.col("end_to_end_id"))


KEY_COLUMNS = ("txn_key", "key_method", "fingerprint")  # what transaction_keys derives for dedupe
# the raw columns the keys and the dedupe decision read
KEY_INPUTS = ("file_hash", "record_number", "own_account", "booking_date", "amount", "currency", "bank_reference",
              "status")
# what a fingerprint is made of (``_account``: the normalised own account, ``_occurrence``: ``_with_occurrence``)
FINGERPRINT_PARTS = ("_account", "booking_date", "amount", "currency", "_occurrence")


def _keys(raw: pl.LazyFrame) -> pl.LazyFrame:
    """``KEY_COLUMNS`` added to ``raw`` (in its row order), from ``KEY_INPUTS`` only."""
    return _with_occurrence(raw.with_columns(_account=_account())).with_columns(_key_strings()).drop(
        "_account", "_occurrence")


def _account() -> pl.Expr:
    return m.normalise_account(pl.col("own_account"))


def _with_occurrence(frame: pl.LazyFrame) -> pl.LazyFrame:
    """``_occurrence`` added: the row's number, in record order, among the rows of its file with its account
    (``_account``), booking date, amount and currency; in ``frame``'s row order.

    Numbered by a window over the rows whose combination's hash repeats in ``frame`` (``digests.where_repeating``:
    rows with equal combinations have equal hashes, so the numbers are exact); every other row is alone in its
    combination: 0."""
    group = ["file_hash", *FINGERPRINT_PARTS[:-1]]
    number = pl.int_range(pl.len(), dtype=pl.UInt32).over(group, order_by="record_number")
    return digests.where_repeating(frame, pl.struct(group), "_occurrence", number, 0)


def _key_strings() -> list[pl.Expr]:
    """``KEY_COLUMNS`` as text, from ``FINGERPRINT_PARTS`` and the bank reference; null where a part they use is
    null (``_txn_parts`` is the same key as parts)."""
    account = pl.col("_account")
    fingerprint = pl.concat_str([account, pl.col("booking_date").cast(pl.String), pl.col("amount").cast(pl.String),
                                 pl.col("currency"), pl.col("_occurrence").cast(pl.String)], separator="|")
    return [
        fingerprint.alias("fingerprint"),
        _key_method(_referenced()),
        pl.when(_referenced()).then(pl.concat_str([pl.lit("ref"), account, pl.col("bank_reference")], separator="|"))
        .otherwise(pl.concat_str([pl.lit("fp"), fingerprint], separator="|")).alias("txn_key"),
    ]


def _referenced() -> pl.Expr:
    """A row keyed by the bank's reference."""
    return pl.col("bank_reference").is_not_null()


def _txn_parts() -> pl.Expr:
    """``txn_key`` as a struct of its parts (equal exactly when the texts are: the normalised account holds no
    '|', the currency is three letters), null where the text is: the account and the reference for a referenced
    row, else the fingerprint's parts."""
    plain = [pl.when(~_referenced()).then(pl.col(part)) for part in FINGERPRINT_PARTS[1:]]
    whole = pl.when(_referenced()).then(pl.col("_account").is_not_null()).otherwise(_fingerprint_known())
    return pl.when(whole).then(pl.struct(pl.col("_account"), pl.col("bank_reference"), *plain))


def _fingerprint_known() -> pl.Expr:
    """Every part of the fingerprint is there (its text is not null)."""
    return pl.all_horizontal(pl.col(part).is_not_null() for part in FINGERPRINT_PARTS)


def dedupe_transactions(keyed: pl.LazyFrame, manifest: pl.LazyFrame) -> pl.LazyFrame:
    """One row per transaction, deterministically: booked copies beat pending ones, then the earliest-ingested
    file wins, then the first record.

    Rows with a bank reference are one transaction per reference. A row without one is a duplicate when its
    fingerprint matches a kept row of another file (with or without a reference), unless that row is pending
    and this one booked.
    """
    # decide on the narrow key columns only, then gather the wide rows once, in the final order
    keyed = keyed.with_row_index("_row")
    positioned = keyed.select("_row", "txn_key", "fingerprint", "file_hash", "record_number", "status",
                              _referenced=pl.col("key_method") == "bank_reference")
    # the keys come along with the kept rows, so the wide side never computes them (nor their window) again
    kept = _kept(positioned, manifest, pl.col("txn_key"), ["fingerprint"], carry=["txn_key", "fingerprint"])
    return (kept.join(keyed.drop(*KEY_COLUMNS), on="_row", how="left", maintain_order="left")
            .select(keyed.drop("_row").collect_schema().names()))


def _kept(positioned: pl.LazyFrame, manifest: pl.LazyFrame, txn_key: pl.Expr, fingerprint: Sequence[str],
          carry: Sequence[str]) -> pl.LazyFrame:
    """The dedupe decision: ``_row``, ``key_method`` and the ``carry`` columns of the rows kept, in staging
    order. ``positioned``: ``_row`` (its row position), ``_referenced``, ``file_hash``, ``record_number``,
    ``status``, the columns ``txn_key`` (an expression) reads and the ``fingerprint`` columns; the keys as text
    (``dedupe_transactions``) or as their parts (``kept_raw_rows``), the same decision.

    Rows in ingest order (as ingestion writes raw) need only a stable sort on the pending flag to be in decision
    order, and ``_row`` is then the staging order; other input is sorted by every key."""
    referenced_row, pending = pl.col("_referenced"), pl.col("_pending")
    # collected where a plan reads a frame more than once (polars would hold it anyway, beside what follows)
    # the file's place in ingest order set by a lookup, not a join: the columns of an in-memory ``positioned`` are
    # not copied
    seq = manifest.select("file_hash", "ingest_seq").collect()
    positioned = positioned.with_columns(
        _pending=pl.col("status") != m.BOOKED,
        ingest_seq=pl.col("file_hash").replace_strict(seq["file_hash"], seq["ingest_seq"], default=None,
                                                      return_dtype=seq.schema["ingest_seq"]),
    ).drop("status").collect()
    in_order = crm_staging.in_ingest_order(positioned.lazy())
    order = [] if in_order else ["ingest_seq", "record_number"]
    decided = ["_row", "_referenced", "_pending", "file_hash", *fingerprint, *carry, *order]
    ordered = positioned.lazy()
    if not in_order:
        ordered = ordered.sort(pending, "ingest_seq", "record_number")
    else:
        ordered = ordered.drop("ingest_seq", "record_number")
        if positioned["_pending"].any():  # else booked rows first is ingest order already: nothing to move
            ordered = ordered.sort(pending, maintain_order=True)
    ordered = ordered.collect().lazy()
    del positioned
    by_key = _firsts(ordered, txn_key).select(*dict.fromkeys(decided)).collect().lazy()
    # a row without a reference is a copy of a referenced row of another file, unless that one is only pending
    # and this one is booked (the booked copy is what counts as revenue; the booked referenced version, when it
    # arrives, takes its place)
    plain = by_key.filter(~referenced_row)
    # the first referenced row of each fingerprint a plain row has: a booked one where there is one (booked rows
    # come first)
    referenced = (
        by_key.filter(referenced_row, *(pl.col(part).is_not_null() for part in fingerprint))
        .join(plain.select(fingerprint), on=fingerprint, how="semi", maintain_order="left")
        .select(*fingerprint, pl.col("file_hash").alias("_ref_file"), pending.alias("_ref_pending"))
        .unique(subset=fingerprint, keep="first", maintain_order=True)
    )
    copies = (plain.join(referenced, on=fingerprint, how="left", maintain_order="left")
              .filter(pl.col("_ref_file").is_null() | (pl.col("_ref_file") == pl.col("file_hash"))
                      | (pl.col("_ref_pending") & ~pending)))
    columns = ["_row", "_referenced", *carry, *order]
    return (
        pl.concat([by_key.filter(referenced_row).select(columns), copies.select(columns)])
        .sort(*(order or ["_row"]))
        .select("_row", _key_method(referenced_row), *carry)
    )


def _firsts(frame: pl.LazyFrame, key: pl.Expr) -> pl.LazyFrame:
    """The rows of ``frame`` that come first among the rows with their ``key``, in
    ``frame``'s order (rows with a null key are one key, as for ``is_first_distinct``); only the rows whose key's
    hash repeats are compared (``digests.where_repeating``)."""
    first = digests.where_repeating(frame, key, "_first", key.is_first_distinct(), True)
    return first.filter("_first").drop("_first")


def _key_method(referenced: pl.Expr) -> pl.Expr:
    """``key_method``: which key ``txn_key`` is, the bank's reference or the fingerprint."""
    return pl.when(referenced).then(pl.lit("bank_reference")).otherwise(pl.lit("fingerprint")).alias("key_method")


def dedupe_parts(raw: pl.LazyFrame) -> pl.LazyFrame:
    """What ``kept_raw_rows`` decides on, from ``KEY_INPUTS`` of a whole raw table: per raw row (in its order)
    ``_row`` (its position), the keys' parts and what the decision compares. Narrow, so a rebuild never holds the
    raw table's wide columns while it decides, and parts rather than text: the 64-character file hashes, the
    account and the currency as categoricals (a few distinct values), the amount and the date as numbers."""
    coded = (
        raw.select(KEY_INPUTS)
        .with_columns(pl.col("file_hash").cast(pl.Categorical), _account=_account().cast(pl.Categorical),
                      currency=pl.col("currency").cast(pl.Categorical))
        .with_row_index("_row")
    ).collect()  # read once: the occurrence number reads it three times
    return _with_occurrence(coded.lazy()).select(
        "_row", _referenced().alias("_referenced"), *FINGERPRINT_PARTS, "bank_reference", "file_hash",
        "record_number", "status")


def kept_raw_rows(parts: pl.LazyFrame, manifest: pl.LazyFrame) -> pl.LazyFrame:
    """``dedupe_transactions(transaction_keys(raw))``'s decision for a whole raw table from its ``dedupe_parts``
    (best collected first: the decision reads them more than once): ``_row`` (the kept row's position in
    ``raw``) and its ``_occurrence`` (from which, with the row, ``gather_kept`` writes the keys), in staging
    order. 10M raw rows, the parts and the decision against deciding on the keys' text: peak 4.5 -> 2.2-2.4 GB,
    18 -> 5-11 s; the whole rebuild's stage 4.7 -> 2.8 GB."""
    coded = manifest.with_columns(pl.col("file_hash").cast(pl.Categorical))
    return _kept(parts, coded, _txn_parts(), FINGERPRINT_PARTS, carry=["_occurrence"]).select("_row", "_occurrence")


def gather_kept(raw: pl.LazyFrame, kept: pl.DataFrame, rows: tuple[int, int] | None = None) -> pl.LazyFrame:
    """The rows of ``raw`` that ``kept`` (``kept_raw_rows``, collected) names, with their keys, in ``kept``'s
    order: equal to ``dedupe_transactions(transaction_keys(raw), manifest)``. ``rows`` (offset, length), when
    ``kept``'s ``_row`` increases: only those of raw's rows ``offset`` .. ``offset + length``, so the table can be
    written a slice at a time.

    When ``kept``'s ``_row`` increases (the raw table is in ingest and record order, as ingestion writes it), raw
    order is the staging order: the raw rows are filtered by position, a plan that streams, and ``kept``'s
    occurrences set beside them (a join on ``_row`` held the raw side in memory: 10M rows, peak 4.9 -> 3.3 GB, 10
    -> 7 s); else the joined rows are sorted by their position in ``kept`` (in memory)."""
    # of no rows: transaction_keys collects its occurrence passes over the frame it is given (10M rows: 3.8 s)
    names = transaction_keys(raw.clear()).collect_schema().names()
    positioned = raw.with_row_index("_row")
    if rows is not None:
        offset, length = rows
        assert kept["_row"].is_sorted(), "gather_kept slices raw tables in staging order only"
        first, end = kept["_row"].search_sorted(offset), kept["_row"].search_sorted(offset + length)
        positioned, kept = positioned.slice(offset, length), kept.slice(first, end - first)
    positioned = positioned.with_columns(end_to_end_id=_end_to_end_id())
    if kept["_row"].is_sorted():
        taken = pl.concat([positioned.filter(pl.col("_row").is_in(kept["_row"].implode())),
                           kept.lazy().select("_occurrence")], how="horizontal")
    else:
        taken = (positioned.join(kept.lazy().with_row_index("_position"), on="_row", how="inner",
                                 maintain_order="left").sort("_position"))
    return taken.with_columns(_account=_account()).with_columns(_key_strings()).select(names)


def related_staged(staged: pl.LazyFrame, new_keyed: pl.LazyFrame) -> pl.LazyFrame:
    """The staged rows a dedupe of new rows must see: those sharing a ``txn_key`` or a ``fingerprint`` with a new
    row (``new_keyed``: ``transaction_keys`` of the new files' raw rows); narrow, only what dedupe decides on."""
    # a filter on the new keys (a night's few), which the parquet reader applies as it reads: semi joins held the
    # whole staged side (100M staged rows: a night's stage peaked at 19.3 GB); staged txn_keys are unique, so each
    # related row comes once, in staging order
    keys = new_keyed.select("txn_key", "fingerprint").collect()
    related = (pl.col("txn_key").is_in(keys["txn_key"].drop_nulls().implode())
               | pl.col("fingerprint").is_in(keys["fingerprint"].drop_nulls().implode()))
    return staged.select(*KEY_COLUMNS, "file_hash", "status", "record_number").filter(related.fill_null(False))


def dedupe_increment(related: pl.LazyFrame, new_keyed: pl.LazyFrame, manifest: pl.LazyFrame) -> pl.LazyFrame:
    """``dedupe_transactions`` for the rows of files ingested after the staged ones, decided against the staged
    rows they meet (``related_staged``).

    Returns the rows the dedupe keeps: the related staged ones (``_staged`` true, narrow) and the new ones
    (``_staged`` false), in staging order. When every related staged row is kept, the new ones kept are exactly
    those a dedupe of the whole raw layer keeps, appended after the staged rows; when one is not, a new row
    supersedes a staged one and staging must be rebuilt (the caller's check).

    Why: the new files sort after every staged one (higher ``ingest_seq``), so a new row wins a ``txn_key`` that
    staging already holds only when it is booked and the staged row pending — which drops that staged row; and a
    ``fingerprint``'s referenced file changes only when a new referenced row comes first for it — which drops the
    staged unreferenced row of that fingerprint, or changes nothing. Raw rows that are not staged decide nothing
    a staged row does not: each lost its ``txn_key`` to a staged row, or its fingerprint to a staged referenced
    row of another file (so a new row with that key is dropped too: its file is new, and a fingerprint is unique
    within a file). The kept new rows then follow the staged ones in (ingest_seq, record_number) order, as in the
    full build.
    """
    return dedupe_transactions(pl.concat([related.with_columns(_staged=pl.lit(True)),
                                          new_keyed.with_columns(_staged=pl.lit(False))], how="diagonal_relaxed"),
                               manifest)


def _number(text: pl.Expr) -> pl.Expr:
    """A CRM number as text ('0,8', ' 7 ', '1.234,5'): Float64, null when it is not a number."""
    return crm_staging.number_text(text).cast(pl.Float64, strict=False)


def share_of_wallet(text: pl.Expr) -> pl.Expr:
    """Share of wallet as a fraction 0..1 (an expression over the whole column).

    CRMs keep it as a fraction (0.8) or a percentage ('80%', or 80 in a 0-100 field). A value with '%' is a
    percentage; so is every value of a column holding any value above 1 and up to 100 (a share cannot exceed the
    whole), else the values are fractions. What is then outside 0..1 or not a number is null (unknown), like any
    unreadable CRM field, rather than a share that would make the client look exclusive."""
    stripped = text.str.strip_chars()
    percent = stripped.str.ends_with("%")
    value = _number(stripped.str.strip_suffix("%"))
    percent_scale = (value.is_between(1, 100, closed="right") & ~percent).any()
    scaled = pl.when(percent | percent_scale).then(value / 100).otherwise(value)
    return pl.when(scaled.is_between(0, 1)).then(scaled)


def stage_crm_clients(raw_clients: pl.LazyFrame, manifest: pl.LazyFrame) -> pl.LazyFrame:
    """Typed CRM clients: one row per client id over all dumps (the id without surrounding spaces: ' C1' and 'C1'
    are one client), the latest ingested version winning; sorted by client id."""
    present = set(raw_clients.collect_schema().names())
    flags = [m.flag(c).alias(c) if c in present else pl.lit(None, pl.Boolean).alias(c) for c in CRM_FLAGS]
    return crm_staging.latest(raw_clients.with_columns(pl.col("client_id").str.strip_chars()), manifest, "clients"
                              ).filter(pl.col("client_id").is_not_null()).select(
        pl.col("client_id"),
        pl.col("name"),
        identity.normalise_company_name(pl.col("name")).alias("name_key"),
        pl.col("tax_id"),
        m.normalise_tax_id(pl.col("tax_id")).alias("tax_id_key"),
        # ';' or ',' between accounts (no IBAN or account number holds either)
        pl.col("accounts").str.replace_all(",", ";", literal=True).str.split(";")
        .list.eval(m.normalise_account(pl.element()))
        .list.drop_nulls().alias("account_keys"),
        pl.col("industry"),
        pl.col("region"),
        *(pl.col(c) if c in present else pl.lit(None, pl.String).alias(c) for c in ("size_band", "acquisition_channel")),
        (share_of_wallet(pl.col("share_of_wallet")) if "share_of_wallet" in present
         else pl.lit(None, pl.Float64)).alias("share_of_wallet"),
        (_number(pl.col("satisfaction")) if "satisfaction" in present
         else pl.lit(None, pl.Float64)).alias("satisfaction"),
        pl.col("manager_id"),
        pl.col("referred_by_client_id"),
        pl.col("created_date").str.to_date("%Y-%m-%d", strict=False).alias("created_date"),
        *flags,
    ).sort("client_id")


def supersede_crm_clients(staged: pl.LazyFrame, new: pl.LazyFrame) -> pl.LazyFrame:
    """The staged CRM clients after newer dumps: ``staged`` (``stage_crm_clients`` of the files before) with the
    clients ``new`` (``stage_crm_clients`` of the newer files' rows alone) has replaced by its rows. Equal to
    ``stage_crm_clients`` of every file (``crm_staging.supersede``), so a night's CRM export stages its own
    clients, not every version ever ingested."""
    return crm_staging.supersede(staged, new, "clients").sort("client_id")


# a row's counterparty identifiers as the bank wrote them: everything labelling reads of a row besides its purpose
IDENTIFIERS = ("counterparty_tax_id", "counterparty_account", "counterparty_name")


def identifier_labels(txns: pl.LazyFrame, *, own_accounts: Sequence[str] = (),
                      excluded_ids: Sequence[str] = ()) -> pl.LazyFrame:
    """One row per distinct ``IDENTIFIERS`` of ``txns``' rows, with the labels of a row that carries them: the
    normalised counterparty identifiers and the own-transfer / exclusion flags (DOMAIN §1, §9; own accounts are the
    configured ones plus every account a statement was issued for). A row's labels are a function of its
    identifiers and the settings, its purpose keywords aside (``label_rows``), so they are worked out once per
    payer's spelling (10M rows: ~250k) and joined to the rows once; ``key_counterparties`` adds the key."""
    excluded = _ids(excluded_ids)
    own_keys = _own_keys(txns, own_accounts).with_columns(_own_transfer=pl.lit(True))
    # collected: the normalisation reads the distinct identifiers three times, and a plan would find them three
    # times (10M rows: ~2 s each)
    ids = txns.select(IDENTIFIERS).unique().collect()
    return (
        _normalised(ids.lazy())
        .join(own_keys, on="_acct", how="left")
        .with_columns(_own_transfer=pl.col("_own_transfer").fill_null(False),
                      _excluded=(pl.col("_tax").is_in(excluded) | pl.col("_acct").is_in(excluded)).fill_null(False))
    )


def label_rows(txns: pl.LazyFrame, labels: pl.LazyFrame | pl.DataFrame, *,
               excluded_keywords: Sequence[str] = ()) -> pl.LazyFrame:
    """``txns`` with the ``labels`` of their identifiers (``identifier_labels``, keyed or not, of these rows or of
    rows they are part of, e.g. a slice), and excluded also by a keyword of their purpose."""
    rows = txns.join(labels.lazy(), on=IDENTIFIERS, how="left", nulls_equal=True, maintain_order="left")
    if not any(k.strip() for k in excluded_keywords):
        return rows
    return rows.with_columns(_excluded=pl.col("_excluded") | _purpose_excluded(excluded_keywords))


def _purpose_excluded(excluded_keywords: Sequence[str]) -> pl.Expr:
    """A row whose purpose contains one of the keywords (any case); false for every row without keywords."""
    keywords = [k.lower() for k in excluded_keywords if k.strip()]
    purpose = pl.col("purpose").fill_null("").str.to_lowercase()
    return pl.any_horizontal([purpose.str.contains(k, literal=True) for k in keywords] or [pl.lit(False)])


def _own_keys(txns: pl.LazyFrame, own_accounts: Sequence[str]) -> pl.LazyFrame:
    """``_acct``: our own accounts, the configured ones plus every account a statement was issued for."""
    own = _ids(own_accounts)
    return pl.concat([statement_accounts(txns), pl.LazyFrame({"_acct": own}, schema={"_acct": pl.String})]).unique()


def counterparty_evidence(labels: pl.LazyFrame) -> pl.LazyFrame:
    """The distinct combinations of identifiers (``identity.EVIDENCE_SCHEMA``) of the ``identifier_labels`` that are
    not own transfers: what ``identity.counterparty_groups`` keys."""
    return labels.filter(~pl.col("_own_transfer")).select(identity.evidence_columns()).unique()


def key_counterparties(labelled: pl.LazyFrame, groups: pl.LazyFrame, *,
                       excluded_ids: Sequence[str] = ()) -> pl.LazyFrame:
    """``labelled`` with its ``counterparty_key`` from ``groups`` (``identity.counterparty_groups`` of at least its
    rows' identifiers); an own transfer, which has no group, keeps the key of its own identifiers. An excluded
    tax id or account excludes its whole counterparty, also the rows that do not carry it (the label's flag
    reads the row's own identifiers)."""
    excluded = [f"{kind}:{a}" for a in _ids(excluded_ids) for kind in ("tax", "acct")]
    return (
        labelled.with_columns(identity.evidence_columns())
        .join(groups.select(*identity.GROUPS_SCHEMA), on=list(identity.EVIDENCE_SCHEMA), how="left",
              nulls_equal=True, maintain_order="left")
        .with_columns(counterparty_key=pl.coalesce("counterparty_key", identity.counterparty_key()))
        .with_columns(_excluded=pl.col("_excluded") | pl.col("counterparty_key").is_in(excluded).fill_null(False))
        .drop(*identity.EVIDENCE_SCHEMA)
    )


def group_counterparties(txns: pl.LazyFrame, *, own_accounts: Sequence[str] = (), excluded_ids: Sequence[str] = (),
                         excluded_keywords: Sequence[str] = ()) -> tuple[pl.DataFrame, pl.DataFrame, pl.LazyFrame]:
    """The rows' counterparties, worked out per distinct identifiers rather than per row (four lookups joined to
    each of 10M rows took ~3x the time). Returns (labels, groups, counterparties): the ``identifier_labels`` of
    ``txns`` with their ``counterparty_key`` (``label_rows`` gives them to the rows), the groups of the identifiers
    (``staging.counterparty``), and ``counterparties`` of the labelled rows."""
    labels = identifier_labels(txns, own_accounts=own_accounts, excluded_ids=excluded_ids).collect()
    groups = identity.counterparty_groups(counterparty_evidence(labels.lazy()).collect().lazy()).collect()
    keyed = key_counterparties(labels.lazy(), groups.lazy(), excluded_ids=excluded_ids).collect()
    return keyed, groups, _keyed_counterparties(txns, keyed, excluded_keywords)


def _keyed_counterparties(txns: pl.LazyFrame, keyed: pl.DataFrame, excluded_keywords: Sequence[str]) -> pl.LazyFrame:
    """``counterparties(label_rows(txns, keyed, excluded_keywords=...))`` without labelling each row: a row only needs
    the number of its identifiers' label, so the first row and whether one paid us are found per label (a
    group-by on that number) and then per key, from the labels (10M rows: 9.4 -> 3.0 s)."""
    ids = keyed.lazy().with_row_index("_id")
    rows = (txns.with_row_index("_position").filter(~_purpose_excluded(excluded_keywords))
            .join(ids.select(*IDENTIFIERS, "_id"), on=IDENTIFIERS, how="left", nulls_equal=True))
    firsts = (rows.group_by("_id").agg(pl.col("_position").min(), pays_us_row().any().alias("_paid_us"))
              .join(ids, on="_id").sort("_position"))
    return _group_tax(
        firsts.filter(pl.col("counterparty_key").is_not_null() & ~pl.col("_own_transfer") & ~pl.col("_excluded"))
        .group_by("counterparty_key", maintain_order=True)
        .agg(pl.col("_tax", "_acct", "_name").first(), pl.col("_paid_us").any())
    )


def statement_accounts(txns: pl.LazyFrame) -> pl.LazyFrame:
    """``_acct``: the accounts statements were issued for (normalised ``own_account``), once each: normalised per
    distinct value (a few per company) instead of per transaction; the rest of the rows is never read."""
    return (txns.select(pl.col("own_account").unique())
            .select(m.normalise_account(pl.col("own_account")).alias("_acct")).drop_nulls().unique())


def _normalised(txns: pl.LazyFrame) -> pl.LazyFrame:
    """``txns`` with the normalised counterparty name, tax id and account (``_name``, ``_tax``, ``_acct``) and
    ``_tax_valid`` (the tax id passes its checksum: ``identity.valid_tax_id``): row-wise."""
    # the name folding is some twenty regex passes: run it once per distinct name, not once per transaction
    names = (txns.select("counterparty_name").unique()
             .with_columns(_name=identity.normalise_company_name(pl.col("counterparty_name"))))
    # likewise the checksum, once per distinct tax id (Python: python-stdnum)
    taxes = (txns.select(pl.col("counterparty_tax_id").unique().drop_nulls())
             .with_columns(_tax_valid=m.normalise_tax_id(pl.col("counterparty_tax_id"))
                           .map_elements(identity.valid_tax_id, return_dtype=pl.Boolean)))
    return (txns.join(names, on="counterparty_name", how="left", nulls_equal=True, maintain_order="left")
            .join(taxes, on="counterparty_tax_id", how="left", maintain_order="left")
            .with_columns(
                _tax=m.normalise_tax_id(pl.col("counterparty_tax_id")),
                _acct=m.normalise_account(pl.col("counterparty_account")),
                _tax_valid=pl.col("_tax_valid").fill_null(False),
            ))


def relabel_staged(staged: pl.LazyFrame) -> pl.LazyFrame:
    """Staged bank rows ready for ``classify`` again (against a new CRM), without labelling them again.

    A row's labels (``identifier_labels``, ``label_rows``) depend on the rows and the settings only, never on the
    CRM, so while neither changed its labels are still those the rows were staged with: the counterparty key is
    staged, and the two flags are in the category (``classify`` made every own transfer ``own_transfer`` and every
    other excluded row ``excluded``). Only an own transfer's exclusion flag is not kept, and nothing reads it: every
    use of ``_excluded`` also requires ``~_own_transfer`` or comes after it. For ``counterparties`` use
    ``staged_counterparties``.
    """
    return staged.with_columns(_own_transfer=pl.col("category") == m.OWN_TRANSFER,
                               _excluded=pl.col("category") == m.EXCLUDED).drop(
        *(c for c in CLASSIFIED_COLUMNS if c != "counterparty_key"))


def staged_counterparties(staged: pl.LazyFrame) -> pl.LazyFrame:
    """``counterparties`` of the labelled rows of staged bank rows, from the first row of each counterparty
    that is neither an own transfer nor excluded (the row ``counterparties`` keeps; the normalisation is
    row-wise), so only those rows are normalised (a few hundred thousand instead of every transaction)."""
    first = (staged.filter(pl.col("counterparty_key").is_not_null()
                           & ~pl.col("category").is_in([m.OWN_TRANSFER, m.EXCLUDED]))
             .unique(subset="counterparty_key", keep="first", maintain_order=True))
    return _group_tax(_normalised(first).select("counterparty_key", "_tax", "_acct", "_name"))


def counterparties(labelled: pl.LazyFrame) -> pl.LazyFrame:
    """The distinct counterparties that could be clients (not our own accounts, not excluded): the identifiers of
    each key's first row, with the group's tax id when the key is one (its first row may be one without), and
    ``_paid_us``: some row of the key makes its client one who paid us (``pays_us``), which ``classify`` reads
    instead of the rows (``paying``)."""
    return _group_tax(
        labelled.filter(pl.col("counterparty_key").is_not_null() & ~pl.col("_own_transfer") & ~pl.col("_excluded"))
        .group_by("counterparty_key", maintain_order=True)
        .agg(pl.col("_tax", "_acct", "_name").first(), pays_us().any().alias("_paid_us"))
    )


def paying_counterparties(labelled: pl.LazyFrame) -> pl.LazyFrame:
    """``counterparty_key, _paid_us`` of every counterparty key (``classify``'s ``paying``) from the rows alone:
    for labelled rows whose identifiers ``counterparties`` does not read (the staged rows, ``relabel_staged``)."""
    return (labelled.filter(pl.col("counterparty_key").is_not_null()).group_by("counterparty_key")
            .agg(pays_us().any().alias("_paid_us")))


def pays_us() -> pl.Expr:
    """A labelled row that makes its client one who paid us: money in, booked (a pending payment may never be), not
    a reversal (the bank returning a movement), not our own transfer nor excluded."""
    return pays_us_row() & ~pl.col("_excluded") & ~pl.col("_own_transfer")


def pays_us_row() -> pl.Expr:
    """What ``pays_us`` reads of the row itself besides its labels: money in, booked, not a reversal."""
    return (pl.col("amount") > 0) & m.is_booked() & ~pl.col("is_reversal").fill_null(False)


def _group_tax(counterparties: pl.LazyFrame) -> pl.LazyFrame:
    by_tax = pl.col("counterparty_key").str.starts_with("tax:")
    return counterparties.with_columns(
        _tax=pl.when(by_tax).then(pl.col("counterparty_key").str.slice(4)).otherwise(pl.col("_tax")))


def fx_convert(frame: pl.LazyFrame, fx_rates: pl.LazyFrame | None, *, reporting_currency: str,
               max_rate_age_days: int = 7) -> pl.LazyFrame:
    """amount_reporting = amount x the latest rate of its currency on or before the booking day.

    ``fx_rates``: ``rate_date, currency, rate`` (units of reporting currency per unit). The reporting currency
    converts at 1; a currency without a rate within ``max_rate_age_days`` stays null, so the staged gate names
    the currency and day (never a silent 1.0). So does an amount too large for ``metrics.MONEY`` (raw holds up to
    18 digits before the point, reporting money 16), which the staged gate names by file and record.
    """
    same = pl.col("currency") == reporting_currency
    if fx_rates is None:
        return frame.with_columns(
            fx_rate=pl.when(same).then(pl.lit(1, m.FX_RATE)),
            amount_reporting=pl.when(same).then(pl.col("amount").round(2).cast(m.MONEY, strict=False)),
        )
    # an equi-join on (currency, day) against a table of every day's rate: the rows stream through it in their
    # order (an as-of join would sort them all by day, and back)
    joined = frame.join(daily_rates(fx_rates, max_rate_age_days), on=["currency", "booking_date"], how="left",
                        maintain_order="left")
    rate = pl.when(same).then(pl.lit(1, m.FX_RATE)).otherwise(pl.col("_rate"))
    return joined.with_columns(fx_rate=rate).with_columns(
        amount_reporting=(pl.col("amount") * pl.col("fx_rate")).round(2).cast(m.MONEY, strict=False),
    ).drop("_rate")


def daily_rates(fx_rates: pl.LazyFrame, max_rate_age_days: int) -> pl.LazyFrame:
    """``currency, booking_date, _rate``: for each currency, every day from its first rate to ``max_rate_age_days``
    after its last, with the latest rate on or before that day, null where that rate is older than
    ``max_rate_age_days`` (a gap in the rates). Its size follows the rates' span (a currency over 20 years:
    7,300 rows), not the transactions'."""
    rates = (fx_rates.select(pl.col("rate_date").alias("_rate_date"), "currency",
                             pl.col("rate").cast(m.FX_RATE).alias("_rate"))
             .sort("_rate_date"))
    days = (rates.group_by("currency")
            .agg(booking_date=pl.date_range(pl.col("_rate_date").min(),
                                            pl.col("_rate_date").max() + pl.duration(days=max_rate_age_days)))
            .explode("booking_date").sort("booking_date"))
    return (days.join_asof(rates, left_on="booking_date", right_on="_rate_date", by="currency", strategy="backward",
                           tolerance=dt.timedelta(days=max_rate_age_days), check_sortedness=False)
            .select("currency", "booking_date", "_rate"))


def classify(labelled: pl.LazyFrame, client_match: pl.LazyFrame, *, reporting_currency: str,
             fx_rates: pl.LazyFrame | None = None, max_rate_age_days: int = 7,
             paid_before: pl.LazyFrame | None = None, paying: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Label every transaction with a category and, for client payments and refunds, a client.

    A counterparty matched to the CRM is that client; otherwise (or in bank-only mode) the counterparty is its
    own client, ``bank:<counterparty key>``. Money in from an identified counterparty is a client payment;
    money out to a client (CRM-matched, or a counterparty that has paid us) is a refund. A reversal (the bank
    returning an earlier movement) is never a client payment: with a client it belongs to the refunds (a
    returned client payment lowers net revenue; a returned refund raises it back), else to the other outgoing
    money, and it does not make its counterparty one who paid us; nor does a pending payment (it may never be
    booked). ``paid_before`` (``client_id``): clients with a booked payment outside ``labelled`` (the staged
    rows, when classifying an increment). ``paying``: ``counterparty_key, _paid_us`` of ``labelled``'s keys, one
    row each (``counterparties`` or ``paying_counterparties``), collected: then ``labelled`` is read once and the plan
    streams (read twice, polars holds the whole labelled frame in memory until the payers are known: 10M rows,
    ~4.4 GB).
    """
    match = client_match.select("counterparty_key", pl.col("client_id").alias("_crm_client"),
                                pl.col("method").alias("_method"))
    is_crm = pl.col("_method").is_in(list(identity.METHODS_CRM))
    client_id = (pl.when(is_crm).then(pl.col("_crm_client"))
                 .otherwise(pl.concat_str([pl.lit("bank:"), pl.col("counterparty_key")])).alias("client_id"))

    def paid(payers: pl.LazyFrame) -> pl.LazyFrame:
        """The clients who paid us: an aggregate joined back (not a window over client_id)."""
        if paid_before is not None:
            payers = pl.concat([payers, paid_before.select("client_id")])
        return payers.unique().with_columns(_has_paid_us=pl.lit(True))

    if paying is None:
        frame = labelled.join(match, on="counterparty_key", how="left", maintain_order="left").with_columns(client_id)
        frame = frame.join(paid(frame.filter(pays_us()).select("client_id")), on="client_id", how="left",
                           maintain_order="left")
    else:
        # the client and whether it paid us are a function of the counterparty key: one join per row. A key without
        # a row in ``paying`` has only own transfers and excluded rows, whose client the category drops: they need
        # no client here
        keys = (paying.select("counterparty_key", "_paid_us").join(match, on="counterparty_key", how="left")
                .with_columns(client_id))
        keys = keys.join(paid(keys.filter("_paid_us").select("client_id")), on="client_id", how="left")
        frame = labelled.join(keys.select("counterparty_key", "_method", "client_id", "_has_paid_us"),
                              on="counterparty_key", how="left", maintain_order="left")
    frame = frame.with_columns(
        match_method=pl.when(is_crm | (pl.col("_method") == "override_own")).then(pl.col("_method"))
        .when(pl.col("counterparty_key").is_not_null()).then(pl.lit("bank_counterparty")))
    reversal = pl.col("is_reversal").fill_null(False)
    has_paid_us = pl.col("_has_paid_us").fill_null(False)
    category = (
        pl.when(pl.col("_own_transfer")).then(pl.lit(m.OWN_TRANSFER))
        .when(pl.col("_excluded")).then(pl.lit(m.EXCLUDED))
        .when(reversal & pl.col("client_id").is_not_null() & (is_crm | has_paid_us)).then(pl.lit(m.REFUND))
        .when(reversal).then(pl.lit(m.OTHER_OUTGOING))
        .when((pl.col("amount") > 0) & pl.col("client_id").is_not_null()).then(pl.lit(m.CLIENT_PAYMENT))
        .when(pl.col("amount") > 0).then(pl.lit(m.UNIDENTIFIED_INCOMING))
        .when(pl.col("client_id").is_not_null() & (is_crm | has_paid_us)).then(pl.lit(m.REFUND))
        .otherwise(pl.lit(m.OTHER_OUTGOING))
    )
    is_client_txn = pl.col("category").is_in([m.CLIENT_PAYMENT, m.REFUND])
    labelled_frame = frame.with_columns(category=category).with_columns(
        client_id=pl.when(is_client_txn).then(pl.col("client_id")),
        match_method=pl.when(is_client_txn).then(pl.col("match_method")),
    )
    return fx_convert(labelled_frame, fx_rates, reporting_currency=reporting_currency,
                      max_rate_age_days=max_rate_age_days).select(STAGED_BANK_COLUMNS)


def classify_and_resolve(
    txns: pl.LazyFrame,
    crm_clients: pl.LazyFrame | None,
    *,
    reporting_currency: str,
    own_accounts: Sequence[str] = (),
    excluded_ids: Sequence[str] = (),
    excluded_keywords: Sequence[str] = (),
    overrides: pl.LazyFrame | None = None,
    fx_rates: pl.LazyFrame | None = None,
    fuzzy_threshold: float = 90.0,
) -> pl.LazyFrame:
    """group_counterparties -> label_rows -> identity.resolve -> classify, for callers that do not need
    the match table."""
    labels, _, found = group_counterparties(txns, own_accounts=own_accounts, excluded_ids=excluded_ids,
                                            excluded_keywords=excluded_keywords)
    labelled = label_rows(txns, labels, excluded_keywords=excluded_keywords)
    match = identity.resolve(found, crm_clients, overrides, threshold=fuzzy_threshold)
    return classify(labelled, match, reporting_currency=reporting_currency, fx_rates=fx_rates, paying=found)


def stage_clients(staged_txns: pl.LazyFrame, crm_clients: pl.LazyFrame | None, *,
                  bank_names: str = "companies") -> pl.LazyFrame:
    """The client dimension: every CRM client plus every bank counterparty that became a client.

    One row per client_id; ``source`` tells where it comes from; ``first_payment_date`` from booked payments. A
    client without a name in the CRM (every bank client) is named by the name its payments carry most often (the
    first in sort order of equally frequent ones) — with ``bank_names='companies'`` only among the names that read
    as a company's (``identity.is_company_name``): a payer without one may be a person, and its name stays out
    (null); ``'all'`` takes any name.
    """
    by_name = (
        staged_txns.filter(m.is_client_payment() & m.is_booked())
        .group_by("client_id", "counterparty_name")
        .agg(pl.len().alias("_payments"), pl.col("booking_date").min().alias("first_payment_date"))
    )
    named = pl.col("counterparty_name").is_not_null()
    if not identity.all_bank_names(bank_names):
        named = named & identity.is_company_name(pl.col("counterparty_name"))
    payments = (
        by_name.with_columns(_named=named.fill_null(False))
        .sort("client_id", "_named", "_payments", "counterparty_name", descending=[False, True, True, False],
              nulls_last=True)
        .group_by("client_id", maintain_order=True)
        .agg(pl.col("first_payment_date").min(),
             pl.when(pl.col("_named")).then(pl.col("counterparty_name")).first().alias("_bank_name"))
    )
    bank_clients = (
        staged_txns.filter(pl.col("client_id").str.starts_with("bank:"))
        .select("client_id").unique()
        .with_columns(source=pl.lit("bank"))
    )
    if crm_clients is not None:
        dim = pl.concat([
            crm_clients.select("client_id", "name", "tax_id", "industry", "region", "size_band",
                               "acquisition_channel", "share_of_wallet", "satisfaction", "manager_id",
                               "referred_by_client_id",
                               "created_date", *CRM_FLAGS).with_columns(
                source=pl.lit("crm")),
            bank_clients,
        ], how="diagonal")
    else:
        dim = bank_clients.with_columns(
            name=pl.lit(None, pl.String), tax_id=pl.lit(None, pl.String), industry=pl.lit(None, pl.String),
            region=pl.lit(None, pl.String), size_band=pl.lit(None, pl.String),
            acquisition_channel=pl.lit(None, pl.String), share_of_wallet=pl.lit(None, pl.Float64),
            satisfaction=pl.lit(None, pl.Float64),
            manager_id=pl.lit(None, pl.String),
            referred_by_client_id=pl.lit(None, pl.String), created_date=pl.lit(None, pl.Date),
            **{c: pl.lit(None, pl.Boolean) for c in CRM_FLAGS})
    return (
        dim.join(payments, on="client_id", how="left", maintain_order="left")
        .with_columns(name=pl.coalesce("name", "_bank_name"))
        .drop("_bank_name")
        .select("client_id", "name", "source", "tax_id", "industry", "region", "size_band", "acquisition_channel",
                "share_of_wallet", "satisfaction", "manager_id", "referred_by_client_id", "created_date",
                "first_payment_date",
                *CRM_FLAGS)
        .sort("client_id")
    )


def _ids(values: Sequence[str]) -> list[str]:
    """Configured accounts or tax ids as the normalised keys compare them (distinct, sorted, empty ones left out)."""
    return sorted({a for a in (_norm(x) for x in values) if a})


def _norm(value: str) -> str:
    return "".join(ch for ch in value.upper() if ch.isalnum())
