import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import crm_staging, identity, staging

RAW_COLUMNS = {
    "file_hash": pl.String, "source_file": pl.String, "record_number": pl.Int32, "own_account": pl.String,
    "booking_date": pl.Date, "value_date": pl.Date, "amount": pl.Decimal(23, 5), "currency": pl.String,
    "counterparty_name": pl.String, "counterparty_tax_id": pl.String, "counterparty_account": pl.String,
    "counterparty_bic": pl.String, "purpose": pl.String, "bank_reference": pl.String, "end_to_end_id": pl.String,
    "status": pl.String, "is_reversal": pl.Boolean,
}
OWN = "DE89370400440532013000"
D = dt.date(2025, 3, 3)


def raw(rows: list[dict]) -> pl.LazyFrame:
    base = {c: None for c in RAW_COLUMNS} | {"own_account": OWN, "booking_date": D, "currency": "EUR",
                                             "status": "BOOK", "is_reversal": False, "source_file": "f"}
    full = [base | {"amount": Decimal(str(r.pop("amount")))} | r for r in rows]
    return pl.DataFrame(full, schema=RAW_COLUMNS).lazy()


def manifest(*hashes: str) -> pl.LazyFrame:
    return pl.LazyFrame({"file_hash": list(hashes), "ingest_seq": list(range(1, len(hashes) + 1))})


def test_keys_prefer_bank_reference_then_fingerprint():
    keyed = staging.transaction_keys(raw([
        {"file_hash": "a", "record_number": 1, "amount": 10, "bank_reference": "R1", "end_to_end_id": "E1"},
        {"file_hash": "a", "record_number": 2, "amount": 10, "end_to_end_id": "NOTPROVIDED", "purpose": "x"},
        {"file_hash": "a", "record_number": 3, "amount": 10, "purpose": "y"},
    ])).collect()
    assert keyed["key_method"].to_list() == ["bank_reference", "fingerprint", "fingerprint"]
    assert keyed["fingerprint"].to_list() == [f"{OWN}|2025-03-03|10.00000|EUR|{i}" for i in range(3)]
    assert keyed["txn_key"].to_list() == [f"ref|{OWN}|R1", f"fp|{OWN}|2025-03-03|10.00000|EUR|1",
                                          f"fp|{OWN}|2025-03-03|10.00000|EUR|2"]
    assert keyed["end_to_end_id"].to_list() == ["E1", None, None]


def dedupe(rows, *hashes):
    frame = raw([{"record_number": i, **r} for i, r in enumerate(rows, start=1)])
    return staging.dedupe_transactions(staging.transaction_keys(frame), manifest(*hashes)).collect()


def test_same_statement_twice_collapses_but_twin_payments_stay():
    twin = {"amount": 99, "counterparty_name": "ACME", "purpose": "rent"}
    out = dedupe([{"file_hash": "a", **twin}, {"file_hash": "a", **twin},
                  {"file_hash": "b", **twin}, {"file_hash": "b", **twin}], "a", "b")
    assert out.height == 2  # two real payments; the second file was a re-export
    assert out["file_hash"].to_list() == ["a", "a"]  # the earliest-ingested copy wins


def test_camt_with_references_and_csv_without_are_one_transaction():
    out = dedupe([
        {"file_hash": "csv", "amount": 100, "counterparty_name": "ACME GMBH"},          # CSV, no reference
        {"file_hash": "camt", "amount": 100, "counterparty_name": "Acme GmbH", "bank_reference": "R9"},
        {"file_hash": "camt", "amount": 55, "bank_reference": "R10"},
    ], "csv", "camt")
    assert sorted(out["txn_key"].to_list()) == [f"ref|{OWN}|R10", f"ref|{OWN}|R9"]
    assert out.height == 2


def test_daily_report_and_monthly_statement_keep_the_booked_copy():
    out = dedupe([
        {"file_hash": "camt052", "amount": 70, "bank_reference": "R1", "status": "PDNG"},
        {"file_hash": "camt053", "amount": 70, "bank_reference": "R1", "status": "BOOK"},
        {"file_hash": "camt053", "amount": 70, "bank_reference": "R2", "status": "BOOK"},  # same amount, other ref
    ], "camt052", "camt053")
    assert out.select("bank_reference", "status", "file_hash").rows() == [
        ("R1", "BOOK", "camt053"), ("R2", "BOOK", "camt053")]


def test_a_booked_copy_without_reference_is_not_lost_to_a_pending_one_with_it():
    """An intraday camt.052 lists the payment as pending with its reference; the CSV export has it booked
    without one. The booked copy is the one revenue counts; when the monthly camt.053 brings the booked
    referenced version, that one is kept and the CSV row is its copy."""
    rows = [{"file_hash": "camt052", "amount": 500, "bank_reference": "R1", "status": "PDNG"},
            {"file_hash": "csv", "amount": 500}]
    out = dedupe(rows, "camt052", "csv")
    assert out.select("file_hash", "status").rows() == [("camt052", "PDNG"), ("csv", "BOOK")]
    later = dedupe([*rows, {"file_hash": "camt053", "amount": 500, "bank_reference": "R1"}],
                   "camt052", "csv", "camt053")
    assert later.select("file_hash", "status").rows() == [("camt053", "BOOK")]
    # a pending copy without reference is still a copy of a pending referenced row
    assert dedupe([rows[0], {"file_hash": "csv", "amount": 500, "status": "PDNG"}], "camt052", "csv").height == 1


def test_a_pending_row_without_a_booked_copy_keeps_its_place():
    """Booked copies are preferred, but the kept rows come back in ingest and record order."""
    out = dedupe([
        {"file_hash": "a", "amount": 70, "bank_reference": "R1", "status": "PDNG"},
        {"file_hash": "a", "amount": 80, "bank_reference": "R2"},
        {"file_hash": "b", "amount": 90, "bank_reference": "R3", "status": "PDNG"},
        {"file_hash": "b", "amount": 80, "bank_reference": "R2"},  # a re-export of a's booked R2
    ], "a", "b")
    assert out.select("bank_reference", "status", "file_hash", "record_number").rows() == [
        ("R1", "PDNG", "a", 1), ("R2", "BOOK", "a", 2), ("R3", "PDNG", "b", 3)]


def test_rebuild_dedupe_from_key_columns_equals_the_whole_dedupe():
    """kept_raw_rows + gather_kept (the rebuild's narrow decision, then the wide rows) give exactly the rows,
    keys and order of dedupe_transactions, whether the raw table is in ingest order or not."""
    twin = {"amount": 99, "counterparty_name": "ACME", "purpose": "rent"}
    rows = [{"file_hash": "a", **twin}, {"file_hash": "a", **twin, "end_to_end_id": "NOTPROVIDED"},
            {"file_hash": "b", **twin}, {"file_hash": "b", **twin},
            {"file_hash": "a", "amount": 70, "bank_reference": "R1", "status": "PDNG", "end_to_end_id": "E7"},
            {"file_hash": "b", "amount": 70, "bank_reference": "R1", "purpose": "booked copy",
             "end_to_end_id": "E6"},
            {"file_hash": "c", "amount": 100, "counterparty_name": "ACME GMBH"},
            {"file_hash": "b", "amount": 100, "bank_reference": "R9"}]
    frame = raw([{"record_number": i, **r} for i, r in enumerate(rows, start=1)]).collect()
    for order in (list(range(len(rows))), [5, 2, 7, 0, 6, 1, 4, 3]):
        table = frame[order].lazy()
        expected = staging.dedupe_transactions(staging.transaction_keys(table), manifest("a", "b", "c")).collect()
        kept = staging.kept_raw_rows(staging.dedupe_parts(table), manifest("a", "b", "c")).collect()
        assert kept["_row"].is_sorted() == (order == sorted(order))  # both ways of gathering
        got = staging.gather_kept(table, kept).collect()
        assert got.equals(expected)
        assert got.select("file_hash", "record_number", "end_to_end_id").rows() == [
            ("a", 1, None), ("a", 2, None), ("b", 6, "E6"), ("b", 8, None)]  # c's row: b's R9 without reference


_DEDUPE_ROW = st.fixed_dictionaries({
    "file_hash": st.sampled_from("abc"),
    "own_account": st.sampled_from([OWN, "de89 3704 0044 0532 0130 00", "LT121000011101001000", "--"]),
    "booking_date": st.sampled_from([D, D + dt.timedelta(days=1)]),
    "amount": st.sampled_from([10, 10.5, -10]),
    "currency": st.sampled_from(["EUR", "USD"]),
    "bank_reference": st.sampled_from([None, None, "R1", "R2"]),
    "status": st.sampled_from(["BOOK", "BOOK", "PDNG"]),
})


def _dedupe_by_hand(keyed: pl.DataFrame, hashes: str) -> list[tuple[str, int]]:
    """The dedupe rule written out row by row over transaction_keys' text keys: (file, record) of the rows kept,
    in staging order."""
    seq = {h: i for i, h in enumerate(hashes)}
    rows = sorted(keyed.rows(named=True), key=lambda r: (seq[r["file_hash"]], r["record_number"]))
    seen, by_key = set(), []
    for r in sorted(rows, key=lambda r: r["status"] != "BOOK"):  # stable: booked first, each in ingest order
        if r["txn_key"] not in seen:  # None (an account with no letters or digits) is one key, as in polars
            seen.add(r["txn_key"])
            by_key.append(r)
    referenced = {}
    for r in by_key:
        if r["key_method"] == "bank_reference" and r["fingerprint"] is not None:
            referenced.setdefault(r["fingerprint"], r)
    kept = [r for r in by_key if r["key_method"] == "bank_reference" or r["fingerprint"] not in referenced
            or referenced[r["fingerprint"]]["file_hash"] == r["file_hash"]
            or (referenced[r["fingerprint"]]["status"] != "BOOK" and r["status"] == "BOOK")]
    return [(r["file_hash"], r["record_number"]) for r in sorted(kept, key=rows.index)]


@given(rows=st.lists(_DEDUPE_ROW, max_size=14), shuffle=st.randoms(use_true_random=False))
@settings(max_examples=80, deadline=None)
def test_the_dedupe_keeps_what_its_rule_says_on_text_or_on_parts(rows, shuffle):
    """Both ways of deciding (the increments' on text keys, the rebuild's on the keys' parts, which numbers only
    the combinations whose hash repeats) keep the rows the rule, written out by hand, keeps; in ingest order and
    not."""
    numbered = [{"record_number": i, **r} for i, r in enumerate(rows, start=1)]
    if shuffle.random() < 0.5:
        shuffle.shuffle(numbered)
    table = raw(numbered)
    keyed = staging.transaction_keys(table).collect()
    expected = staging.dedupe_transactions(keyed.lazy(), manifest(*"abc")).collect()
    assert expected.select("file_hash", "record_number").rows() == _dedupe_by_hand(keyed, "abc")
    kept = staging.kept_raw_rows(staging.dedupe_parts(table), manifest(*"abc")).collect()
    assert staging.gather_kept(table, kept).collect().equals(expected)
    # the occurrence: the row's number among its file's rows with its account, day, amount and currency
    for r in keyed.rows(named=True):
        if r["fingerprint"] is not None:
            twins = keyed.filter(pl.col("file_hash") == r["file_hash"],
                                 pl.col("fingerprint").str.replace(r"\|\d+$", "")
                                 == r["fingerprint"].rsplit("|", 1)[0],
                                 pl.col("record_number") < r["record_number"])
            assert r["fingerprint"].endswith(f"|{twins.height}")


def crm_clients() -> pl.LazyFrame:
    raw_clients = pl.LazyFrame({
        "file_hash": ["c", "c"], "record_number": [1, 2], "client_id": ["C1", "C2"], "name": ["Müller GmbH", "Baltic UAB"],
        "tax_id": ["DE 136 695 976", None], "accounts": [None, "LT12 1000 0101 2345 678, LT00 0000;LV11"],
        "industry": ["retail", "transport"], "region": [None, None], "manager_id": ["M1", "M2"],
        "referred_by_client_id": [None, "C1"], "created_date": ["2020-01-31", "bad"],
    })
    return staging.stage_crm_clients(raw_clients, manifest("c"))


def test_crm_clients_typed():
    clients = crm_clients().collect()
    assert clients["tax_id_key"].to_list() == ["DE136695976", None]
    assert clients["account_keys"].to_list() == [None, ["LT12100001012345678", "LT000000", "LV11"]]
    assert clients["created_date"].to_list() == [dt.date(2020, 1, 31), None]


@pytest.mark.parametrize(("values", "shares"), [
    (["0.8", "0,5", None, "n/a"], [0.8, 0.5, None, None]),  # fractions; unreadable: unknown
    (["80", "50", "0.5", "1"], [0.8, 0.5, 0.005, 0.01]),  # a 0-100 field: every value is a percentage
    (["80%", " 75 % ", "0.9", "1"], [0.8, 0.75, 0.9, 1.0]),  # '%' marks its own value only
    (["0.9", "120", "-0.1"], [0.9, None, None]),  # impossible shares are unknown, not exclusive
])
def test_share_of_wallet_is_a_fraction_whatever_the_crm_scale(values, shares):
    frame = pl.DataFrame({"s": values}, schema={"s": pl.String})
    got = frame.select(staging.share_of_wallet(pl.col("s")))["s"].to_list()
    assert [None if v is None else round(v, 9) for v in got] == shares


def classify(rows, crm=True, **kwargs):
    keyed = staging.transaction_keys(raw([{"file_hash": "a", "record_number": i, **r}
                                          for i, r in enumerate(rows, start=1)]))
    return staging.classify_and_resolve(keyed, crm_clients() if crm else None, reporting_currency="EUR",
                                        **kwargs).collect()


def test_a_payer_without_its_tax_id_on_some_rows_is_one_client():
    """Bank-only: 1C payment orders of one payer, some with its INN, some with '0' or none; by account or name."""
    rows = [
        {"amount": 100, "counterparty_tax_id": "7707083893", "counterparty_account": "40702810400000000001",
         "counterparty_name": "ООО «Ромашка»"},
        {"amount": 200, "counterparty_tax_id": "0", "counterparty_account": "40702810400000000001",
         "counterparty_name": "ООО «Ромашка»"},
        {"amount": 300, "counterparty_name": "Ромашка ООО"},
        {"amount": 400, "counterparty_account": "40702810400000000002", "counterparty_name": "ООО «Ромашка»"},
    ]
    out = classify(rows, crm=False)
    # the second account never carries the INN: its own client (an account is never joined by a name), so the
    # name alone is unsure and stays its own too
    assert out["client_id"].to_list() == ["bank:tax:7707083893", "bank:tax:7707083893", "bank:" + identity.name_digest("ромашка"),
                                          "bank:acct:40702810400000000002"]
    without_second = classify(rows[:3], crm=False)
    assert without_second["client_id"].to_list() == ["bank:tax:7707083893"] * 3


def test_an_excluded_tax_id_excludes_its_rows_without_it():
    """A lender excluded by its INN: its orders that left the INN out (same account) are not client revenue."""
    out = classify([
        {"amount": 5000, "counterparty_tax_id": "7707083893", "counterparty_account": "40702810400000000001"},
        {"amount": 300, "counterparty_tax_id": "0", "counterparty_account": "40702810400000000001"},
        {"amount": 70, "counterparty_account": "40702810400000000009"},
    ], crm=False, excluded_ids=["7707083893"])
    assert out.select("category", "client_id").rows() == [
        ("excluded", None), ("excluded", None), ("client_payment", "bank:acct:40702810400000000009")]


def test_rows_without_the_tax_id_follow_its_crm_match():
    out = classify([
        {"amount": 100, "counterparty_tax_id": "DE136695976", "counterparty_account": "DE44500105175407324931",
         "counterparty_name": "Müller Handel"},
        {"amount": 200, "counterparty_account": "DE44500105175407324931", "counterparty_name": "M. Handel"},
    ])
    assert out.select("client_id", "match_method").rows() == [("C1", "tax_id"), ("C1", "tax_id")]


def test_classification_and_resolution():
    out = classify([
        {"amount": "100.005", "counterparty_tax_id": "de136695976", "counterparty_name": "MUELLER"},  # tax id
        {"amount": 50, "counterparty_account": "LT121000010123456 78"},                            # account
        {"amount": -20, "counterparty_account": "LT12100001012345678"},                             # refund
        {"amount": 70, "counterparty_name": "Walk-in Shop e.K."},                                    # bank client
        {"amount": -700, "counterparty_name": "Finanzamt", "counterparty_tax_id": "DE811208257"},   # excluded id
        {"amount": -5000, "counterparty_account": "DE02120300000000202051"},                        # own account
        {"amount": -300, "counterparty_name": "Supplier AG"},                                       # supplier
        {"amount": 12, "purpose": "Zinsen"},                                                        # no party
        {"amount": -9, "counterparty_name": "X", "purpose": "Gehalt März"},                         # keyword
    ], own_accounts=["DE02 1203 0000 0000 2020 51"], excluded_ids=["DE811208257"], excluded_keywords=["GEHALT"])
    assert out["category"].to_list() == [
        "client_payment", "client_payment", "refund", "client_payment", "excluded", "own_transfer",
        "other_outgoing", "unidentified_incoming", "excluded"]
    assert out["client_id"].to_list() == ["C1", "C2", "C2", "bank:" + identity.name_digest("walk in shop"), None, None, None, None,
                                          None]
    assert out["match_method"].to_list()[:4] == ["tax_id", "account", "account", "bank_counterparty"]
    assert out["amount_reporting"][0] == Decimal("100.00")  # rounded half to even, to the cent


def test_bank_only_mode_refund_needs_a_paying_counterparty():
    out = classify([
        {"amount": 100, "counterparty_account": "EE471000001020145685", "counterparty_name": "Tallinn OÜ"},
        {"amount": -10, "counterparty_account": "EE471000001020145685", "counterparty_name": "Tallinn OÜ"},
        {"amount": -10, "counterparty_account": "EE000000000000000001", "counterparty_name": "Landlord"},
    ], crm=False)
    assert out["category"].to_list() == ["client_payment", "refund", "other_outgoing"]
    assert out["client_id"].to_list() == ["bank:acct:EE471000001020145685"] * 2 + [None]
    # a payment still pending (it may never be booked) does not make the counterparty a payer yet
    pending = classify([
        {"amount": 100, "status": "PDNG", "counterparty_account": "EE471000001020145685"},
        {"amount": -10, "counterparty_account": "EE471000001020145685"},
    ], crm=False)
    assert pending["category"].to_list() == ["client_payment", "other_outgoing"]


def test_an_invalid_tax_id_does_not_make_payers_one():
    """Russian payment orders carry INN '0' for individuals, and ids get mistyped: such an id is no key (the
    account or name is), so three payers stay three, and only the one whose account is C2's is C2."""
    rows = [{"amount": 1000, "counterparty_tax_id": "0", "counterparty_account": "LT12 1000 0101 2345 678",
             "counterparty_name": "Иванов И.И."},
            {"amount": 5000, "counterparty_tax_id": "0", "counterparty_account": "40817810000000000001",
             "counterparty_name": "Петров П.П."},
            {"amount": 7000, "counterparty_tax_id": "0", "counterparty_account": "40817810000000000002",
             "counterparty_name": "Сидоров С.С."}]
    assert classify(rows)["client_id"].to_list() == [
        "C2", "bank:acct:40817810000000000001", "bank:acct:40817810000000000002"]
    assert classify(rows, crm=False)["client_id"].n_unique() == 3
    valid = classify([{"amount": 1, "counterparty_tax_id": "7707083893", "counterparty_account": "X1"}], crm=False)
    assert valid["client_id"].to_list() == ["bank:tax:7707083893"]  # a valid INN is the key


def test_a_reversal_is_never_revenue_nor_makes_a_client():
    """RvslInd / MT940 RC-RD: the bank returns an earlier movement. A returned supplier payment is not a sale
    (and must not make the supplier a client whose other payments become refunds); a returned client payment
    lowers net revenue as a refund does; a returned refund raises it back."""
    supplier = {"counterparty_account": "DE12500105170648489890", "counterparty_name": "Lieferant GmbH"}
    client = {"counterparty_account": "EE471000001020145685", "counterparty_name": "Tallinn OÜ"}
    out = classify([
        {"amount": -10000, **supplier}, {"amount": -300, **supplier},
        {"amount": 300, "is_reversal": True, **supplier},  # the -300 came back
        {"amount": 100, **client}, {"amount": -100, "is_reversal": True, **client},  # the client's 100 went back
        {"amount": -20, **client}, {"amount": 20, "is_reversal": True, **client},  # a refund that came back
    ], crm=False)
    assert out["category"].to_list() == ["other_outgoing"] * 3 + ["client_payment", "refund", "refund", "refund"]
    assert out["client_id"].to_list() == [None] * 3 + ["bank:acct:EE471000001020145685"] * 4


_PARTY_ROW = st.fixed_dictionaries({
    "counterparty_tax_id": st.sampled_from([None, "DE136695976", "de136695976", "0"]),
    "counterparty_account": st.sampled_from([None, "EE471000001020145685", "EE47 1000 0010 2014 5685",
                                             "DE02120300000000202051", "DE811208257"]),
    "counterparty_name": st.sampled_from([None, "Acme GmbH", "ACME", " "]),
    "purpose": st.sampled_from([None, "Darlehen 4", "rent"]),
    "amount": st.sampled_from([100, -10]),
    "status": st.sampled_from(["BOOK", "PDNG"]),
    "is_reversal": st.booleans(),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(_PARTY_ROW, max_size=12))
def test_counterparties_found_per_label_equal_those_of_the_labelled_rows(rows):
    """``group_counterparties`` finds the counterparties per distinct identifiers (each key's first row and whether
    one paid us), without labelling every row: the same as ``counterparties`` of the labelled rows, with spellings
    of one payer in any order, own accounts, excluded ids and rows excluded by a purpose keyword; and ``classify``
    reading who paid us from them (one join per row to a table per key) labels the rows as reading the rows does."""
    txns = staging.transaction_keys(raw([{"file_hash": "a", "record_number": i, **r}
                                         for i, r in enumerate(rows, start=1)]))
    labels, _, found = staging.group_counterparties(
        txns, own_accounts=["DE02120300000000202051"], excluded_ids=["DE811208257"], excluded_keywords=["darlehen"])
    labelled = staging.label_rows(txns, labels, excluded_keywords=["darlehen"])
    found = found.collect()
    assert found.equals(staging.counterparties(labelled).collect())
    match = identity.resolve(found.lazy(), crm_clients(), None).collect().lazy()
    assert staging.classify(labelled, match, reporting_currency="EUR", paying=found.lazy()).collect().equals(
        staging.classify(labelled, match, reporting_currency="EUR").collect())


def test_classify_reads_who_paid_us_from_the_counterparties_or_the_rows_alike():
    """``classify`` knows which clients paid us from ``counterparties`` (the full rebuild: one read of the rows),
    from ``paying_counterparties`` (the staged rows) or from the rows themselves (an increment): the same labels.
    Each case decides whether a money-out row of the same counterparty is a refund."""
    payer = {"counterparty_account": "EE471000001020145685"}  # booked money in: a payer
    pending = {"counterparty_account": "EE000000000000000002"}  # only a pending payment
    reversed_ = {"counterparty_account": "EE000000000000000003"}  # only a reversal coming in
    excluded = {"counterparty_account": "EE000000000000000004", "purpose": "Darlehen"}  # excluded by keyword
    supplier = {"counterparty_account": "EE000000000000000005"}  # money out only
    rows = [{"amount": 100, **payer}, {"amount": -10, **payer},
            {"amount": 100, "status": "PDNG", **pending}, {"amount": -10, **pending},
            {"amount": 30, "is_reversal": True, **reversed_}, {"amount": -10, **reversed_},
            {"amount": 500, **excluded}, {"amount": -10, "counterparty_account": excluded["counterparty_account"]},
            {"amount": -10, **supplier},
            {"amount": 40, "counterparty_tax_id": "DE136695976"}, {"amount": -5, "counterparty_tax_id": "DE136695976"}]
    keyed = staging.transaction_keys(raw([{"file_hash": "a", "record_number": i, **r}
                                          for i, r in enumerate(rows, start=1)]))
    for crm in (crm_clients(), None):
        labels, _, grouped = staging.group_counterparties(keyed, excluded_keywords=["darlehen"])
        labelled = staging.label_rows(keyed, labels, excluded_keywords=["darlehen"])
        found = staging.counterparties(labelled).collect()
        assert grouped.collect().equals(found)
        match = identity.resolve(found.lazy(), crm, None).collect().lazy()
        from_rows = staging.classify(labelled, match, reporting_currency="EUR").collect()
        assert from_rows["category"].to_list() == [
            "client_payment", "refund", "client_payment", "other_outgoing", "other_outgoing", "other_outgoing",
            "excluded", "other_outgoing", "other_outgoing", "client_payment", "refund"]
        assert staging.classify(labelled, match, reporting_currency="EUR", paying=found.lazy()).collect().equals(
            from_rows)
        paying = staging.paying_counterparties(labelled).collect()
        assert sorted(paying.filter("_paid_us")["counterparty_key"]) == sorted(
            found.filter("_paid_us")["counterparty_key"]) == ["acct:EE471000001020145685", "tax:DE136695976"]
        assert staging.classify(labelled, match, reporting_currency="EUR", paying=paying.lazy()).collect().equals(
            from_rows)


def test_an_override_to_dash_makes_the_counterparty_its_own_client():
    rows = [{"amount": 70, "counterparty_name": "Mueller GmbH"}]  # equal to the CRM's 'Müller GmbH' (C1)
    assert classify(rows).select("client_id", "match_method").row(0) == ("C1", "name_exact")
    overrides = identity.override_keys(pl.LazyFrame({"counterparty_key": ["name:Mueller"], "client_id": ["-"]}))
    out = classify(rows, overrides=overrides)
    assert out.select("category", "client_id", "match_method").row(0) == (
        "client_payment", f"bank:{identity.name_digest('mueller')}", "override_own")


def test_foreign_currency_is_not_silently_converted():
    out = classify([{"amount": 10, "currency": "USD", "counterparty_name": "US Corp"}])
    assert out["category"][0] == "client_payment"
    assert out["amount_reporting"][0] is None  # the staged gate fails on this, naming USD


def test_the_own_statement_account_is_an_own_transfer_even_unconfigured():
    out = classify([{"amount": -1, "counterparty_account": OWN}])
    assert out["category"].to_list() == ["own_transfer"]


def test_client_dimension_bank_only():
    """A bank client is named by its most frequent name among those that read as a company's; a private payer's
    or a sole trader's whose name is the person's ('ИП') stays out unless identity.bank_names is 'all'."""
    staged = classify([{"amount": 100, "counterparty_name": "ИП Сидоров"},
                       {"amount": 50, "counterparty_name": "ИП Сидоров"},
                       {"amount": 10, "counterparty_name": "Nordlicht Handel GmbH", "counterparty_account": "DE02"},
                       {"amount": 20, "counterparty_name": "NORDLICHT HANDEL", "counterparty_account": "DE02"},
                       {"amount": 30, "counterparty_name": "NORDLICHT HANDEL", "counterparty_account": "DE02"}],
                      crm=False)
    dim = staging.stage_clients(staged.lazy(), None).collect()
    assert dim.select("client_id", "name", "source", "first_payment_date").rows() == [
        ("bank:acct:DE02", "Nordlicht Handel GmbH", "bank", D), ("bank:" + identity.name_digest("сидоров"), None, "bank", D)]
    every = staging.stage_clients(staged.lazy(), None, bank_names="all").collect()
    assert every["name"].to_list() == ["NORDLICHT HANDEL", "ИП Сидоров"]


@given(files=st.lists(st.lists(st.sampled_from(["I1", "I2", "I3", None]), max_size=5), min_size=2, max_size=5),
       data=st.data())
@settings(max_examples=60, deadline=None)
def test_superseding_the_staged_rows_with_newer_files_equals_staging_every_file(files, data):
    """A CRM night stages its files' rows alone and lets them replace the staged versions: the same rows in the
    same order as ``latest`` over every file, for any ids (repeated in a file, across files, missing)."""
    hashes = [f"f{n}" for n in range(len(files))]
    rows = [(h, r, invoice, f"{h}.{r}") for h, ids in zip(hashes, files, strict=True)
            for r, invoice in enumerate(ids, start=1)]
    raw_invoices = pl.DataFrame(rows, schema={"file_hash": pl.String, "record_number": pl.Int64,
                                              "invoice_id": pl.String, "amount": pl.String}, orient="row").lazy()
    files_ = manifest(*hashes)
    split = data.draw(st.integers(1, len(files) - 1))
    old, new = (raw_invoices.filter(pl.col("file_hash").is_in(part)) for part in (hashes[:split], hashes[split:]))
    staged = crm_staging.latest(old, files_, "invoices")
    got = crm_staging.supersede(staged, crm_staging.latest(new, files_, "invoices"), "invoices").collect()
    assert got.equals(crm_staging.latest(raw_invoices, files_, "invoices").collect())


def raw_crm_clients(frame: pl.DataFrame | pl.LazyFrame):
    """Raw CRM client rows with ids and names only: the other columns of an export, empty."""
    return frame.with_columns(*(pl.lit(None, pl.String).alias(c) for c in (
        "tax_id", "accounts", "industry", "region", "manager_id", "referred_by_client_id", "created_date")))


@given(files=st.lists(st.lists(st.sampled_from(["C1", " C1", "C2 ", "C3", None]), max_size=5), min_size=2,
                      max_size=5), data=st.data())
@settings(max_examples=60, deadline=None)
def test_superseding_the_staged_crm_clients_equals_staging_every_dump(files, data):
    """The CRM clients staged from the newer dumps alone replace the staged versions of their ids: the same
    dimension as staging every dump, ids with spaces around them being the same client ('C1', ' C1')."""
    hashes = [f"f{n}" for n in range(len(files))]
    rows = [(h, r, client, f"{h}.{r}") for h, ids in zip(hashes, files, strict=True)
            for r, client in enumerate(ids, start=1)]
    raw = pl.DataFrame(rows, schema={"file_hash": pl.String, "record_number": pl.Int64, "client_id": pl.String,
                                     "name": pl.String}, orient="row").pipe(raw_crm_clients).lazy()
    files_ = manifest(*hashes)
    split = data.draw(st.integers(1, len(files) - 1))
    old, new = (raw.filter(pl.col("file_hash").is_in(part)) for part in (hashes[:split], hashes[split:]))
    got = staging.supersede_crm_clients(staging.stage_crm_clients(old, files_),
                                        staging.stage_crm_clients(new, files_)).collect()
    want = staging.stage_crm_clients(raw, files_).collect()
    assert got.equals(want)
    assert want["client_id"].is_unique().all()


def test_a_crm_client_id_with_spaces_around_it_is_the_same_client():
    raw = pl.LazyFrame({"file_hash": ["a", "a", "b"], "record_number": [1, 2, 1], "client_id": ["C2", " C1", "C1 "],
                        "name": ["Two", "One (old)", "One"]}).pipe(raw_crm_clients)
    clients = staging.stage_crm_clients(raw, manifest("a", "b")).collect()
    assert clients.select("client_id", "name").rows() == [("C1", "One"), ("C2", "Two")]


def test_newer_files_replace_the_staged_versions_of_their_ids_and_keep_the_rest():
    staged = pl.LazyFrame({"invoice_id": ["I1", None, "I2", "I3"], "amount": [1, 2, 3, 4]})
    new = pl.LazyFrame({"invoice_id": ["I3", "I4", None, "I1"], "amount": [30, 40, 50, 10]})
    assert crm_staging.supersede(staged, new, "invoices").collect().rows() == [
        (None, 2), ("I2", 3), ("I3", 30), ("I4", 40), (None, 50), ("I1", 10)]


def test_crm_latest_takes_the_latest_file_and_its_first_record_of_an_id():
    """Three dumps: an id in several files comes from the last of them (its first record there), an id repeated
    inside one file from its first record, rows without an id all stay; the order is ingest then record order,
    also when the raw rows come in another order."""
    rows = [("a", 1, "I1", "a1"), ("a", 2, "I2", "a2"), ("a", 3, None, "a3"), ("a", 4, "I2", "a4"),
            ("b", 1, "I2", "b1"), ("b", 2, "I3", "b2"), ("b", 3, "I2", "b3"), ("b", 4, None, "b4"),
            ("c", 1, "I3", "c1"), ("c", 2, "I4", "c2")]
    raw_invoices = pl.DataFrame(rows, schema=["file_hash", "record_number", "invoice_id", "amount"], orient="row")
    expected = [("a", 1, "I1", "a1"), ("a", 3, None, "a3"), ("b", 1, "I2", "b1"), ("b", 4, None, "b4"),
                ("c", 1, "I3", "c1"), ("c", 2, "I4", "c2")]
    files = manifest("a", "b", "c")
    assert crm_staging.latest(raw_invoices.lazy(), files, "invoices").collect().rows() == expected
    shuffled = raw_invoices.sample(fraction=1.0, shuffle=True, seed=7)
    assert shuffled.rows() != rows
    assert crm_staging.latest(shuffled.lazy(), files, "invoices").collect().rows() == expected
    later_first = pl.LazyFrame({"file_hash": ["c", "a", "b"], "ingest_seq": [1, 2, 3]})  # c ingested first
    assert crm_staging.latest(raw_invoices.lazy(), later_first, "invoices").collect().rows() == [
        ("c", 2, "I4", "c2"), ("a", 1, "I1", "a1"), ("a", 3, None, "a3"), ("b", 1, "I2", "b1"),
        ("b", 2, "I3", "b2"), ("b", 4, None, "b4")]


def test_crm_latest_in_slices_gives_the_rows_of_the_whole_table():
    """``dropped_rows`` names the rows ``latest`` leaves out, by position; slices of any size then give the rows
    of the whole table, in its order. Rows out of ingest order cannot be sliced (``latest`` sorts them)."""
    rows = [("a", 1, "I1", "a1"), ("a", 2, "I2", "a2"), ("a", 3, None, "a3"), ("a", 4, "I2", "a4"),
            ("b", 1, "I2", "b1"), ("b", 2, "I3", "b2"), ("b", 3, "I2", "b3"), ("b", 4, None, "b4"),
            ("c", 1, "I3", "c1"), ("c", 2, "I4", "c2")]
    raw_invoices = pl.DataFrame(rows, schema=["file_hash", "record_number", "invoice_id", "amount"],
                                orient="row").lazy()
    files = manifest("a", "b", "c")
    dropped = crm_staging.dropped_rows(raw_invoices, files, "invoices")
    assert dropped.to_list() == [1, 3, 5, 6]
    whole = crm_staging.latest(raw_invoices, files, "invoices").collect()
    for size in (1, 3, 4, 10):
        parts = [crm_staging.latest(raw_invoices, files, "invoices", crm_staging.RawSlice(offset, size, dropped))
                 for offset in range(0, len(rows), size)]
        assert pl.concat(parts).collect().equals(whole), size
    later_first = pl.LazyFrame({"file_hash": ["c", "a", "b"], "ingest_seq": [1, 2, 3]})
    assert crm_staging.dropped_rows(raw_invoices, later_first, "invoices") is None


_NUMBER_TOKENS = [*"0123456789.,-+ 'e", "\u00a0", "\u202f", "\t", "inf", "nan", "1234", ".5", "1.234,5"]


@given(st.lists(st.none() | st.lists(st.sampled_from(_NUMBER_TOKENS), max_size=8).map("".join), max_size=30))
@settings(max_examples=300, deadline=None)
def test_parse_number_reads_every_text_as_number_text_does(texts):
    """The fast path (a plain cast where it takes the text) never reads a number differently."""
    frame = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    for dtype in (pl.Decimal(18, 2), pl.Float64):
        fast = frame.select(crm_staging.parse_number(pl.col("t"), dtype))["t"]
        slow = frame.select(crm_staging.number_text(pl.col("t")).cast(dtype, strict=False))["t"]
        assert fast.equals(slow, null_equal=True), (texts, dtype, fast.to_list(), slow.to_list())


@pytest.mark.parametrize(("text", "value"), [
    ("1234,56", "1234.56"), ("1.234,56", "1234.56"), ("1,234.56", "1234.56"), ("1 234,56", "1234.56"),
    ("1\u00a0234,56", "1234.56"), ("1\u202f234,56", "1234.56"), ("1'234.50", "1234.50"), ("1234.56", "1234.56"),
    ("1.234.567", "1234567.00"), ("1,234,567", "1234567.00"), ("-5,5", "-5.50"), (" 12 ", "12.00"),
    ("abc", None), ("", None), (None, None),
])
def test_crm_money_in_every_usual_notation(text, value):
    """A CRM export writes money its country's way; an unreadable cost or hourly rate would silently fall back
    to the defaults (margin, hourly cost), so every usual notation is read."""
    raw_invoices = pl.LazyFrame({"file_hash": ["c"], "record_number": [1], "invoice_id": ["I1"], "client_id": ["C1"],
                                 "issue_date": ["2025-01-01"], "due_date": [None], "amount": [text],
                                 "currency": ["EUR"], "cost": [text], "margin": [None], "status": ["won"]},
                                schema_overrides={"amount": pl.String, "cost": pl.String, "due_date": pl.String,
                                                  "margin": pl.String})
    out = crm_staging.stage_invoices(raw_invoices, manifest("c"), payment_terms_days=30).collect()
    expected = None if value is None else Decimal(value)
    assert out.select("amount", "cost").row(0) == (expected, expected)
