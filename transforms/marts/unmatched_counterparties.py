"""unmatched_counterparties: who pays us but is not (surely) a CRM client — the list a person works through.

Grain: one row per bank counterparty (tax id, else account, else normalised name) that made booked client
payments and matched no CRM client, or matched ambiguously. Empty in bank-only mode (there is no CRM to match).
Fix a row by adding ``counterparty_key,client_id`` to the overrides file (``identity.overrides_file``); ``-`` as
the client id confirms it is no CRM client (it is then its own client and no longer listed). Names that do not
read as a company's stay out (``identity.bank_names``): the account and tax id say where to look.
"""

from __future__ import annotations

import polars as pl

from transforms import identity
from transforms import metrics as m

NAME = "unmatched_counterparties"
GRAIN = "one row per paying bank counterparty with no sure CRM match (empty in bank-only mode)"
KEY = ("counterparty_key",)
PARTITION_BY = None
SCHEMA: dict[str, tuple[pl.DataType, str]] = {
    "counterparty_key": (pl.String(), "tax:<id> | acct:<account> | name:<16 hex digits of the normalised name's "
                                      "digest>; use it in the overrides file"),
    "status": (pl.String(), "unmatched | ambiguous (several CRM clients fit about equally well)"),
    "names_seen": (pl.String(), "Counterparty names as the bank wrote them, '; '-separated: only those that read "
                                "as a company's unless identity.bank_names is 'all'"),
    "names_withheld": (pl.Int32(), "Names seen that do not read as a company's (maybe a person's: no legal form "
                                   "such as GmbH, Ltd, ООО), left out of names_seen"),
    "tax_id": (pl.String(), "Tax id seen on the payments, if any"),
    "tax_id_valid": (pl.Boolean(), "Whether that tax id passes its checksum"),
    "account": (pl.String(), "Counterparty account seen on the payments, if any"),
    "payments": (pl.Int32(), "Booked incoming payments"),
    "total_amount": (m.MONEY, "Their total, reporting currency"),
    "first_payment": (pl.Date(), "First booked payment"),
    "last_payment": (pl.Date(), "Last booked payment"),
    "best_candidates": (pl.String(), "Closest CRM clients with name scores (client_id:score; ...)"),
    "reporting_currency": (pl.String(), "ISO 4217 code of total_amount"),
}


def build(staged_txns: pl.LazyFrame, client_match: pl.LazyFrame, *, crm_present: bool, min_amount: float,
          reporting_currency: str, bank_names: str = "companies") -> pl.LazyFrame:
    empty = pl.LazyFrame(schema={c: t for c, (t, _) in SCHEMA.items()})
    if not crm_present:
        return empty
    unmatched = client_match.filter(pl.col("method").is_in(["bank_counterparty", "ambiguous"]))
    payments = (
        staged_txns.filter(m.is_booked() & m.is_client_payment())
        # only these counterparties' payments are aggregated (most payers are matched); the rows keep their
        # order, which decides the first tax id and account seen
        .join(unmatched.select("counterparty_key"), on="counterparty_key", how="semi", maintain_order="left")
        .group_by("counterparty_key")
        .agg(
            _names=pl.col("counterparty_name").drop_nulls().unique().sort(),
            tax_id=pl.col("counterparty_tax_id").drop_nulls().first(),
            account=pl.col("counterparty_account").drop_nulls().first(),
            payments=pl.len().cast(pl.Int32),
            total_amount=pl.col("amount_reporting").sum().cast(m.MONEY),
            first_payment=pl.col("booking_date").min(),
            last_payment=pl.col("booking_date").max(),
        )
    )
    return (
        payments.join(unmatched, on="counterparty_key", how="inner")
        .filter(pl.col("total_amount") >= min_amount)
        .with_columns(_shown=pl.col("_names") if identity.all_bank_names(bank_names) else pl.col("_names").list.eval(
            pl.element().filter(identity.is_company_name(pl.element()))))
        .with_columns(
            names_seen=pl.col("_shown").list.join("; "),
            names_withheld=(pl.col("_names").list.len() - pl.col("_shown").list.len()).cast(pl.Int32),
            status=pl.when(pl.col("method") == "ambiguous").then(pl.lit("ambiguous")).otherwise(pl.lit("unmatched")),
            best_candidates=pl.col("candidates"),
            reporting_currency=pl.lit(reporting_currency),
        )
        .select(list(SCHEMA))
        .cast({c: t for c, (t, _) in SCHEMA.items()})
        .sort(["total_amount", "counterparty_key"], descending=[True, False])
    )
