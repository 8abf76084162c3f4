"""unmatched_counterparties: given staged payments and a match table, the rows a person works through."""

import datetime as dt
from decimal import Decimal

import polars as pl

from transforms import metrics as m
from transforms.marts import unmatched_counterparties as mart

D = dt.date


def staged(rows):
    return pl.LazyFrame(rows, schema={"counterparty_key": pl.String, "counterparty_name": pl.String,
                                      "counterparty_tax_id": pl.String, "counterparty_account": pl.String,
                                      "category": pl.String, "status": pl.String, "booking_date": pl.Date,
                                      "amount_reporting": m.MONEY}, orient="row")


MATCH = pl.LazyFrame({
    "counterparty_key": ["tax:DE1", "acct:LT2", "name:nord", "name:acme"],
    "client_id": [None, None, None, "C1"],
    "method": ["bank_counterparty", "ambiguous", "bank_counterparty", "name_exact"],
    "tax_id_valid": [False, None, None, None],
    "candidates": [None, "C7:91; C8:90", None, None],
})


def test_unmatched_and_ambiguous_payers_with_what_was_seen_on_their_payments():
    rows = [
        ("tax:DE1", "Walk-in GmbH", None, "DE44", "client_payment", "BOOK", D(2026, 3, 2), Decimal("10.00")),
        ("name:acme", "Acme", None, None, "client_payment", "BOOK", D(2026, 3, 2), Decimal("99.00")),  # matched
        ("tax:DE1", "Walk In GmbH", "DE1", "DE55", "client_payment", "BOOK", D(2026, 3, 9), Decimal("5.50")),
        ("tax:DE1", "Walk-in GmbH", "DE1", None, "client_payment", "PDNG", D(2026, 3, 20), Decimal("70.00")),
        ("acct:LT2", "Baltic UAB", None, "LT2", "client_payment", "BOOK", D(2026, 2, 1), Decimal("40.00")),
        ("acct:LT2", "Baltic UAB", None, "LT2", "refund", "BOOK", D(2026, 2, 3), Decimal("-40.00")),
        ("name:nord", "Nord", None, None, "client_payment", "BOOK", D(2026, 1, 5), Decimal("0.50")),
    ]
    got = mart.build(staged(rows), MATCH, crm_present=True, min_amount=1, reporting_currency="EUR").collect()
    assert got.select("counterparty_key", "status", "names_seen", "tax_id", "tax_id_valid", "account", "payments",
                      "total_amount", "first_payment", "last_payment", "best_candidates").rows() == [
        ("acct:LT2", "ambiguous", "Baltic UAB", None, None, "LT2", 1, Decimal("40.00"), D(2026, 2, 1), D(2026, 2, 1),
         "C7:91; C8:90"),
        ("tax:DE1", "unmatched", "Walk In GmbH; Walk-in GmbH", "DE1", False, "DE44", 2, Decimal("15.50"),
         D(2026, 3, 2), D(2026, 3, 9), None),
    ]  # Nord paid less than min_amount; Acme is a CRM client; pending payments and refunds do not count
    assert mart.build(staged(rows), MATCH, crm_present=False, min_amount=0, reporting_currency="EUR").collect().height == 0


def test_names_that_do_not_read_as_a_company_stay_out_and_are_counted():
    """A payer without a legal form in its name may be a person: the name is personal data (issue 7)."""
    rows = [
        ("acct:DE7", "Erika Musterfrau", None, "DE7", "client_payment", "BOOK", D(2026, 3, 2), Decimal("10.00")),
        ("acct:DE7", "Musterfrau Consulting GmbH", None, "DE7", "client_payment", "BOOK", D(2026, 3, 3),
         Decimal("20.00")),
        ("acct:DE7", "ИП Иванов Иван Иванович", None, "DE7", "client_payment", "BOOK", D(2026, 3, 4), Decimal("5.00")),
    ]
    match = pl.LazyFrame({"counterparty_key": ["acct:DE7"], "client_id": [None], "method": ["bank_counterparty"],
                          "tax_id_valid": [None], "candidates": [None]},
                         schema={"counterparty_key": pl.String, "client_id": pl.String, "method": pl.String,
                                 "tax_id_valid": pl.Boolean, "candidates": pl.String})
    got = mart.build(staged(rows), match, crm_present=True, min_amount=0, reporting_currency="EUR").collect()
    assert got.select("names_seen", "names_withheld", "payments").rows() == [("Musterfrau Consulting GmbH", 2, 3)]
    shown = mart.build(staged(rows), match, crm_present=True, min_amount=0, reporting_currency="EUR",
                       bank_names="all").collect()
    assert shown.select("names_seen", "names_withheld").rows() == [
        ("Erika Musterfrau; Musterfrau Consulting GmbH; ИП Иванов Иван Иванович", 0)]
