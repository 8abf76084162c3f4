"""A night's settlement matches again only the clients whose invoices or payments changed, and gives exactly the
parts and costs a whole match gives (``flows.steps.settle`` against ``economics.settlement_parts``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from flows import steps
from transforms import economics
from transforms import metrics as m

KEY = ["client_id", "invoice_id", "paid_date", "part_amount", "final"]
WRITE_OFF = 120
START = dt.date(2025, 1, 1)


def history(rng: random.Random, clients: int) -> tuple[list[tuple], list[tuple]]:
    """Invoices (30-day terms) and payments of each client, some paid late, some in part, some never."""
    invoices, payments = [], []
    for c in range(clients):
        for i in range(rng.randint(0, 6)):
            issued = START + dt.timedelta(days=rng.randint(0, 400))
            amount = Decimal(rng.randint(100, 500_000)) / 100
            invoices.append((f"C{c}", f"C{c}-I{i}", issued, issued + dt.timedelta(days=30), amount, "won"))
            if rng.random() < 0.8:
                paid = issued + dt.timedelta(days=rng.randint(5, 200))
                payments.append((f"C{c}", paid, amount if rng.random() < 0.8 else amount / 2))
        if rng.random() < 0.1:  # a payer without invoices
            payments.append((f"C{c}", START + dt.timedelta(days=rng.randint(0, 400)), Decimal("99.99")))
    return invoices, payments


def frames(invoices: list[tuple], payments: list[tuple]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    inv = pl.DataFrame(invoices, orient="row", schema={
        "client_id": pl.String, "invoice_id": pl.String, "issue_date": pl.Date, "due_date": pl.Date,
        "amount": m.MONEY, "status": pl.String})
    pay = pl.DataFrame(payments, orient="row", schema={
        "client_id": pl.String, "booking_date": pl.Date, "amount_reporting": m.MONEY})
    return inv.lazy(), pay.lazy()


def night(invoices, payments, as_of: dt.date, previous: Path | None, version: Path) -> pl.DataFrame:
    """The parts, and the settlement costs from them and the paid parts' cent-days, as prepare_marts gets them."""
    inv, pay = frames(invoices, payments)
    pay = pay.filter(pl.col("booking_date") <= as_of)  # the flow passes the payments booked up to as-of
    parts, paid_late = steps.settle(inv, pay, as_of=as_of, previous=previous, version_dir=version)
    return parts.collect(), economics.settlement_costs(parts, as_of=as_of, cost_of_capital=0.1,
                                                       write_off_days=WRITE_OFF, paid_late=paid_late).collect()


def whole(invoices, payments, as_of: dt.date) -> pl.DataFrame:
    inv, pay = frames(invoices, payments)
    parts = economics.settlement_parts(inv, pay.filter(pl.col("booking_date") <= as_of), as_of=as_of)
    return parts.collect(), economics.settlement_costs(parts, as_of=as_of, cost_of_capital=0.1,
                                                       write_off_days=WRITE_OFF).collect()


def same(got: tuple[pl.DataFrame, pl.DataFrame], expected: tuple[pl.DataFrame, pl.DataFrame]) -> bool:
    costs = ["client_id", "month"]
    return (got[0].sort(KEY).equals(expected[0].sort(KEY)) and got[1].height > 0
            and got[1].sort(costs).equals(expected[1].sort(costs)))  # exact floats


def matched(caplog) -> tuple[int, int]:
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("settlement:")][-1]
    done, total = line.removeprefix("settlement: ").split(" clients")[0].split(" of ")
    return int(done), int(total)


@pytest.mark.parametrize("seed", range(6))
def test_a_night_matches_the_changed_clients_and_equals_a_whole_settlement(tmp_path, caplog, seed):
    caplog.set_level(logging.INFO, logger="clientbase")
    rng = random.Random(seed)
    invoices, payments = history(rng, 40)
    as_of = dt.date(2026, 1, 31)
    first = night(invoices, payments, as_of, None, tmp_path / "v1")
    assert same(first, whole(invoices, payments, as_of))
    assert matched(caplog)[0] == matched(caplog)[1]  # no state yet: everyone

    # the next night: a few clients pay, one gets a new invoice, one is gone (merged in the CRM), a new one
    # arrives; as-of moves on
    clients = sorted({row[0] for row in invoices + payments})
    payers = rng.sample(clients, 3)
    as_of2 = as_of + dt.timedelta(days=rng.choice([1, 20, 75]))
    payments2 = payments + [(c, as_of2, Decimal(rng.randint(100, 300_000)) / 100) for c in payers]
    invoices2 = invoices + [(clients[0], "NEW-1", as_of2, as_of2 + dt.timedelta(days=14), Decimal("700.00"), "won"),
                            ("C-new", "NEW-2", as_of, as_of + dt.timedelta(days=30), Decimal("50.00"), "won")]
    gone = clients[-1]
    invoices2 = [row for row in invoices2 if row[0] != gone]
    payments2 = [row for row in payments2 if row[0] != gone]
    second = night(invoices2, payments2, as_of2, tmp_path / "v1", tmp_path / "v2")
    assert same(second, whole(invoices2, payments2, as_of2))
    done, total = matched(caplog)
    # the payers, the new invoice's client, the new client; and whoever had invoices or payments dated between
    # the two as-of days (they enter the inputs now)
    moved = {row[0] for row in invoices2 if as_of < row[2] <= as_of2} | {
        row[0] for row in payments2 if as_of < row[1] <= as_of2}
    assert done == len(set(payers) - {gone} | {clients[0], "C-new"} | moved) and total == len(clients) + 1 - (
        gone in {row[0] for row in invoices + payments})


def test_clients_matched_in_groups_give_the_whole_settlement(tmp_path, monkeypatch):
    """settle matches big histories in groups of clients (``MATCH_GROUP_INVOICES``): the same parts and costs, on
    the first night and on the next (when only the changed clients are matched)."""
    rng = random.Random(7)
    invoices, payments = history(rng, 60)
    monkeypatch.setattr(steps, "MATCH_GROUP_INVOICES", 25)  # 7 groups of its 156 invoices
    as_of = dt.date(2026, 1, 31)
    assert same(night(invoices, payments, as_of, None, tmp_path / "v1"), whole(invoices, payments, as_of))
    payments2 = payments + [(row[0], as_of + dt.timedelta(days=1), Decimal("10.00")) for row in invoices[:40:4]]
    as_of2 = as_of + dt.timedelta(days=1)
    assert same(night(invoices, payments2, as_of2, tmp_path / "v1", tmp_path / "v2"),
                whole(invoices, payments2, as_of2))


def test_a_settlement_from_other_code_is_not_reused(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clientbase")
    invoices, payments = history(random.Random(1), 20)
    as_of = dt.date(2026, 1, 31)
    night(invoices, payments, as_of, None, tmp_path / "v1")
    state = tmp_path / "v1" / steps.SETTLEMENT_STATE / "state.json"
    n = len({row[0] for row in invoices + payments})
    assert matched(caplog) == (n, n)
    night(invoices, payments, as_of, tmp_path / "v1", tmp_path / "v2")
    assert matched(caplog) == (0, n)
    state.write_text(json.dumps({**json.loads(state.read_text()), "code": "an older release"}))
    again = night(invoices, payments, as_of, tmp_path / "v1", tmp_path / "v3")
    assert matched(caplog) == (n, n) and same(again, whole(invoices, payments, as_of))


def test_a_history_without_invoices_or_payments_settles_to_nothing(tmp_path):
    """Bank-only homes have no invoices (and a new one no payments yet): no parts, no cent-days, on the first
    night and the next."""
    first = night([], [], dt.date(2026, 1, 31), None, tmp_path / "v1")
    assert first[0].height == 0 and first[1].height == 0
    assert first[0].schema == whole([], [], dt.date(2026, 1, 31))[0].schema
    again = night([], [("C1", dt.date(2026, 2, 1), Decimal("5.00"))], dt.date(2026, 2, 1), tmp_path / "v1",
                  tmp_path / "v2")
    assert again[0].rows() == [] and again[1].height == 0


def test_a_client_with_only_later_payment_days_goes_on_from_its_open_invoices(tmp_path, caplog):
    """The second night's match of a client whose invoices and earlier payment days did not change continues from
    its open remainders (``economics.continue_match``): a new day that ends exactly where an invoice ends, a client
    paid beyond its invoices, two new days. A day of the first night that gets more money, and a first payment,
    match the client whole. Both give a whole settlement's parts and costs."""
    caplog.set_level(logging.INFO, logger="clientbase")
    jan, feb, mar = dt.date(2026, 1, 10), dt.date(2026, 2, 10), dt.date(2026, 3, 10)
    invoices = [("C1", "C1-1", jan, jan, Decimal("100.00"), "won"), ("C1", "C1-2", feb, feb, Decimal("200.00"), "won"),
                ("C1", "C1-3", mar, mar, Decimal("300.00"), "won"), ("C2", "C2-1", jan, jan, Decimal("100.00"), "won"),
                ("C3", "C3-1", jan, jan, Decimal("100.00"), "won"), ("C3", "C3-2", feb, feb, Decimal("100.00"), "won"),
                ("C4", "C4-1", jan, jan, Decimal("100.00"), "won"), ("C5", "C5-1", jan, jan, Decimal("100.00"), "won"),
                ("C5", "C5-2", feb, feb, Decimal("50.00"), "won"), ("C6", "C6-1", jan, jan, Decimal("80.00"), "won")]
    day = dt.date(2026, 1, 5)
    payments = [("C1", day, Decimal("150.00")), ("C2", day, Decimal("130.00")), ("C3", day, Decimal("50.00")),
                ("C5", day, Decimal("100.00")), ("C6", day, Decimal("10.00"))]
    as_of = dt.date(2026, 3, 31)
    night(invoices, payments, as_of, None, tmp_path / "v1")
    later = [("C1", dt.date(2026, 3, 1), Decimal("150.00")),  # C1-2 paid to its end, C1-3 untouched
             ("C2", dt.date(2026, 2, 1), Decimal("10.00")),  # paid beyond its invoices already
             ("C3", day, Decimal("20.00")),  # the first night's day gets more money: C3 is matched whole
             ("C4", dt.date(2026, 2, 1), Decimal("40.00")),  # its first payment: matched whole
             ("C5", dt.date(2026, 2, 1), Decimal("20.00")), ("C5", dt.date(2026, 2, 2), Decimal("30.00"))]
    got = night(invoices, payments + later, as_of, tmp_path / "v1", tmp_path / "v2")
    assert same(got, whole(invoices, payments + later, as_of))
    message = [r.getMessage() for r in caplog.records if r.getMessage().startswith("settlement:")][-1]
    assert message == "settlement: 5 of 6 clients matched (3 of them from their last matched payment day on)"
    parts = got[0].filter(pl.col("client_id") == "C1").sort("invoice_id", "paid_date", nulls_last=True)
    assert parts.select("invoice_id", "part_amount", "paid_date", "final").rows() == [
        ("C1-1", Decimal("100.00"), day, True), ("C1-2", Decimal("50.00"), day, False),
        ("C1-2", Decimal("150.00"), dt.date(2026, 3, 1), True), ("C1-3", Decimal("300.00"), None, True)]
    assert parts["amount"].to_list() == [Decimal("100.00"), Decimal("200.00"), Decimal("200.00"), Decimal("300.00")]
