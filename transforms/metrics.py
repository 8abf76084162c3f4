"""Each business formula exactly once, as a ``pl.Expr`` factory (DOMAIN.md is the specification).

Money stays ``Decimal`` end to end: amounts in the reporting currency are ``Decimal(18, 2)``.
"""

from __future__ import annotations

import polars as pl

MONEY = pl.Decimal(18, 2)

# transaction categories assigned in staging (DOMAIN §1: revenue is money received from clients, net of refunds)
CLIENT_PAYMENT = "client_payment"
REFUND = "refund"
OWN_TRANSFER = "own_transfer"
EXCLUDED = "excluded"
OTHER_OUTGOING = "other_outgoing"
UNIDENTIFIED_INCOMING = "unidentified_incoming"
CATEGORIES = (CLIENT_PAYMENT, REFUND, OWN_TRANSFER, EXCLUDED, OTHER_OUTGOING, UNIDENTIFIED_INCOMING)

BOOKED = "BOOK"


def month_start(column: str = "booking_date") -> pl.Expr:
    """The first day of the calendar month of a date."""
    return pl.col(column).dt.truncate("1mo")


def is_booked() -> pl.Expr:
    """Pending (PDNG) and information-only entries never count as revenue."""
    return pl.col("status") == BOOKED


def is_client_payment() -> pl.Expr:
    return pl.col("category") == CLIENT_PAYMENT


def is_refund() -> pl.Expr:
    return pl.col("category") == REFUND


def revenue(amount: str = "amount_reporting") -> pl.Expr:
    """Gross revenue: the sum of incoming client payments."""
    return pl.col(amount).filter(is_client_payment()).sum().cast(MONEY)


def refunds(amount: str = "amount_reporting") -> pl.Expr:
    """Refunds: money paid back to clients, as a positive amount."""
    return (-pl.col(amount).filter(is_refund())).sum().cast(MONEY)


def purchases() -> pl.Expr:
    """Number of purchases: incoming client payments (one payment = one purchase)."""
    return is_client_payment().sum().cast(pl.Int32)


def normalise_account(expr: pl.Expr) -> pl.Expr:
    """IBAN/account number for matching: upper case, letters and digits only; empty -> null."""
    cleaned = expr.str.to_uppercase().str.replace_all(r"[^0-9A-Z]", "")
    return pl.when(cleaned.str.len_chars() > 0).then(cleaned)


def normalise_tax_id(expr: pl.Expr) -> pl.Expr:
    """Tax id for matching: upper case, letters and digits only; empty -> null."""
    return normalise_account(expr)


def normalise_name(expr: pl.Expr) -> pl.Expr:
    """Company name for grouping: case, quotes, punctuation and whitespace folded; empty -> null."""
    cleaned = (
        expr.str.to_lowercase()
        .str.replace_all(r"[\"'«»„“”`]", "")
        .str.replace_all(r"[^\w]+", " ")
        .str.strip_chars()
    )
    return pl.when(cleaned.str.len_chars() > 0).then(cleaned)
