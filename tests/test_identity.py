import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import identity, staging


@pytest.mark.parametrize(("name", "key"), [
    ("Müller & Söhne GmbH & Co. KG", "mueller soehne"),
    ("MUELLER UND SOEHNE GMBH", "mueller soehne"),
    ("Alpen Logistik Gesellschaft mbH", "alpen logistik"),
    ("Bakkerij de Gouden Korenaar B.V.", "bakkerij de gouden korenaar"),
    ("Kowalski Sp. z o.o.", "kowalski"),
    ("Žluťoučký kůň s.r.o.", "zlutoucky kun"),  # accents dropped, as a SEPA export writes the name
    ('SIA "Rīgas Koks"', "rigas koks"),
    ("RIGAS KOKS SIA", "rigas koks"),
    ("Łódź Trans Sp. z o.o.", "lodz trans"),
    ("Société Générale SA", "societe generale"),
    ("Alpha Gesellschaft mit beschränkter Haftung", "alpha"),
    ("Mu\u0308ller GmbH", "mueller"),  # a decomposed ü (NFD) is an ü
    ("ООО «Берёзка»", "березка"),
    ("ООО Березка", "березка"),
    ("Tallinn Trade OÜ", "tallinn trade"),
    ("UAB „Vilniaus prekyba“", "vilniaus prekyba"),
    ('ООО "Ромашка"', "ромашка"),
    ("ПАО «Ростелеком»", "ростелеком"),
    ("北京小米科技有限责任公司", "北京小米科技"),
    ("Acme Inc.", "acme"),
    ("GmbH", None),
])
def test_company_names_fold_legal_forms_in_many_languages(name, key):
    out = pl.select(identity.normalise_company_name(pl.lit(name))).item()
    assert out == key


@pytest.mark.parametrize(("name", "company"), [
    ("Müller & Söhne GmbH & Co. KG", True), ("John Smith and Sons Ltd", True), ("Kowalski Sp. z o.o.", True),
    ('SIA "Rīgas Koks"', True), ("Smith & Co", True), ("ООО «Берёзка»", True),
    ("Общество с ограниченной ответственностью «Ромашка»", True), ('АКЦИОНЕРНОЕ ОБЩЕСТВО "ТИНЬКОФФ БАНК"', True),
    ("Товариство з обмеженою відповідальністю «Світанок»", True), ("北京小米科技有限责任公司", True),
    ("株式会社トヨタ", True), ("AS Rīgas Koks", True), ("Meyer AG", True), ("Alpha GmbH Niederlassung Süd", True),
    # people, also as sole traders, and names that do not say
    ("Nord Einzelhandel e.K.", True),  # a German sole trader's firm: a business name in the commercial register
    ("Erika Musterfrau", False), ("ИП Иванов И.И.", False),
    ("ФОП Шевченко Тарас", False), ("Jan de Vries", False), ("Stadtwerke München", False), ("", False),
    ("Jack and Jill", False), ("José Sá Silva", False), ("Anna Ag Berg", False), (None, None),
])
def test_which_names_read_as_a_company(name, company):
    assert pl.select(identity.is_company_name(pl.lit(name, pl.String))).item() is company


def test_a_mistyped_bank_names_setting_is_an_error_not_a_default():
    assert identity.all_bank_names("all") and not identity.all_bank_names("companies")
    with pytest.raises(ValueError, match="bank_names must be one of"):
        identity.all_bank_names("company")


def test_a_name_key_is_a_stable_digest_and_overrides_may_write_the_name():
    assert pl.select(identity.name_key(pl.lit("walk in shop"))).item() == "name:b1ab42d3553efee8"
    overrides = pl.LazyFrame({"counterparty_key": ["name:Walk-In Shop GmbH", "name:b1ab42d3553efee8", "acct:DE1",
                                                   "name:"],
                              "client_id": ["C1", "C2", "C3", "C4"]})
    assert identity.override_keys(overrides).collect()["counterparty_key"].to_list() == [
        "name:b1ab42d3553efee8", "name:b1ab42d3553efee8", "acct:DE1", None]


@pytest.mark.parametrize(("tax_id", "valid"), [
    ("DE136695976", True), ("DE136695977", False), ("LV40003245752", True), ("EE100931558", True),
    ("7707083893", True), ("7707083894", False), ("500100732259", True), ("5260250274", True),
    ("91110000600037341L", True), ("123", False),
])
def test_tax_id_checksums(tax_id, valid):
    assert identity.valid_tax_id(tax_id) is valid


CLIENTS = pl.LazyFrame({
    "client_id": ["C1", "C2", "C3", "C4", "C5", "C6"],
    "tax_id_key": ["DE136695976", None, "7707083893", None, "DE136695977", None],
    "account_keys": [None, ["LT121000010123456789"], None, None, None, None],
    "name_key": ["mueller soehne", "baltic logistics", "ромашка", "北京小米科技", "falsche steuer", "nord handel"],
})


def match(rows: list[dict], overrides=None, **kwargs) -> dict[str, tuple]:
    cps = pl.LazyFrame(rows, schema={"counterparty_key": pl.String, "_tax": pl.String, "_acct": pl.String,
                                     "_name": pl.String})
    out = identity.resolve(cps, CLIENTS, overrides, **kwargs).collect()
    return {r["counterparty_key"]: (r["client_id"], r["method"], r["confidence"]) for r in out.iter_rows(named=True)}


def test_counterparty_groups_join_one_payers_identifiers_without_guessing():
    evidence = pl.LazyFrame([
        # Acme: its VAT id and account; the account without the id (a payment order that left it out); the name
        ("DE136695976", "DE44500105175407324931", "acme"),
        (None, "DE44500105175407324931", "acme"),
        (None, None, "acme"),
        # an account seen with two tax ids (shared, or a transit account): its rows without one stay its own
        ("7707083893", "40702810000000000001", "romashka"),
        ("500100732259", "40702810000000000001", "berezka"),
        (None, "40702810000000000001", "romashka"),
        (None, None, "romashka"),  # the name has two keys: unsure, its own
        # two accounts of one name and no tax id: a name never joins accounts ('Müller GmbH' / 'Müller KG')
        (None, "LT601010012345678901", "mueller"),
        (None, "LT601010012345678902", "mueller"),
        (None, None, "mueller"),
        (None, None, "walk in shop"),  # nothing else carries the name
        (None, None, None),
    ], schema=identity.EVIDENCE_SCHEMA, orient="row")
    got = {(t, a, n): key for t, a, n, key in identity.counterparty_groups(evidence).collect().iter_rows()}
    assert got == {
        ("DE136695976", "DE44500105175407324931", "acme"): "tax:DE136695976",
        (None, "DE44500105175407324931", "acme"): "tax:DE136695976",
        (None, None, "acme"): "tax:DE136695976",
        ("7707083893", "40702810000000000001", "romashka"): "tax:7707083893",
        ("500100732259", "40702810000000000001", "berezka"): "tax:500100732259",
        (None, "40702810000000000001", "romashka"): "acct:40702810000000000001",
        (None, None, "romashka"): identity.name_digest("romashka"),
        (None, "LT601010012345678901", "mueller"): "acct:LT601010012345678901",
        (None, "LT601010012345678902", "mueller"): "acct:LT601010012345678902",
        (None, None, "mueller"): identity.name_digest("mueller"),
        (None, None, "walk in shop"): "name:b1ab42d3553efee8",
        (None, None, None): None,
    }
    # the same whatever order the evidence comes in
    shuffled = identity.counterparty_groups(evidence.collect().sample(fraction=1.0, shuffle=True, seed=3).lazy())
    assert shuffled.collect().equals(identity.counterparty_groups(evidence).collect())


def test_the_clients_digest_covers_exactly_what_resolve_reads():
    """Two CRM exports with equal digests resolve every counterparty alike (staging skips the resolve of a night
    whose export changed other columns); any change of an id, a tax id, an account or a name, or of the order
    (the fuzzy index keeps it), changes the digest."""
    crm = CLIENTS.with_columns(region=pl.lit("EU"), manager_id=pl.lit("M01"))
    base = identity.clients_digest(crm)
    assert identity.clients_digest(crm.with_columns(region=pl.lit("XX"), manager_id=pl.lit("M02"))) == base
    assert identity.clients_digest(CLIENTS) == base
    changed = [
        crm.with_columns(name_key=pl.col("name_key").str.replace("nord handel", "nord handel nord")),
        crm.with_columns(tax_id_key=pl.col("tax_id_key").fill_null("LV40003245752")),
        crm.with_columns(account_keys=pl.col("account_keys").fill_null([])),
        crm.with_columns(client_id=pl.col("client_id").str.replace("C6", "C7")),
        crm.reverse(),
        crm.head(5),
    ]
    assert len({base, *(identity.clients_digest(frame) for frame in changed)}) == len(changed) + 1
    assert identity.clients_digest(None) == "none"
    # and resolve reads nothing else: the other columns do not reach its result
    cps = pl.LazyFrame({"counterparty_key": ["k1", "k2"], "_tax": [None, None], "_acct": [None, None],
                        "_name": ["muller soehne", "nord handel"]}, schema=dict.fromkeys(
                           ("counterparty_key", "_tax", "_acct", "_name"), pl.String))
    assert identity.resolve(cps, crm).collect().equals(identity.resolve(cps, CLIENTS).collect())


def test_resolution_order_and_methods():
    result = match([
        {"counterparty_key": "k1", "_tax": "DE136695976", "_name": "something else"},        # tax id
        {"counterparty_key": "k2", "_acct": "LT121000010123456789", "_name": "x"},           # account
        {"counterparty_key": "k3", "_name": "ромашка"},                                      # exact name, Cyrillic
        {"counterparty_key": "k4", "_name": "北京小米科技"},                                   # exact name, Chinese
        {"counterparty_key": "k5", "_name": "muller soehne"},                                # fuzzy
        {"counterparty_key": "k6", "_tax": "DE136695977", "_name": "unknown shop"},         # invalid tax id
        {"counterparty_key": "k7", "_name": "completely different"},                          # nothing
    ])
    assert result["k1"] == ("C1", "tax_id", 1.0)
    assert result["k2"] == ("C2", "account", 1.0)
    assert result["k3"] == ("C3", "name_exact", 1.0)
    assert result["k4"] == ("C4", "name_exact", 1.0)
    client, method, confidence = result["k5"]
    assert (client, method) == ("C1", "name_fuzzy") and 0.9 <= confidence < 1.0
    # the CRM's own tax id for C5 fails its checksum, so it is never used to match
    assert result["k6"][:2] == (None, "bank_counterparty")
    assert result["k7"][:2] == (None, "bank_counterparty")


def test_a_name_does_not_match_a_client_with_another_valid_tax_id():
    """'MUELLER SOEHNE' paying with a valid DE129273398 is not C1 (DE136695976): two legal entities with one
    name; a person decides (the unmatched_counterparties mart lists C1 as the candidate)."""
    result = match([
        {"counterparty_key": "k1", "_tax": "DE129273398", "_name": "mueller soehne"},  # exact name, other id
        {"counterparty_key": "k2", "_tax": "DE129273398", "_name": "muller soehne"},  # fuzzy name, other id
        {"counterparty_key": "k3", "_tax": "DE136695977", "_name": "mueller soehne"},  # an invalid id proves nothing
        {"counterparty_key": "k4", "_tax": "500100732259", "_name": "baltic logistics"},  # C2 has no tax id
    ])
    assert result["k1"][:2] == (None, "ambiguous")
    assert result["k2"][:2] == (None, "ambiguous")
    assert result["k3"][:2] == ("C1", "name_exact")
    assert result["k4"][:2] == ("C2", "name_exact")


def test_a_tax_id_with_and_without_its_country_prefix_is_one():
    """Bank exports drop the prefix the CRM writes, or the other way round: 'DE136695976' / '136695976'. The
    numbers must be equal and the prefixed id valid; two different prefixes are two countries."""
    clients = pl.LazyFrame({"client_id": ["C1", "C7"], "tax_id_key": ["DE136695976", "40003245752"],
                            "account_keys": [None, None], "name_key": ["a", "b"]})
    cps = pl.LazyFrame({"counterparty_key": ["k1", "k2", "k3", "k4"], "_acct": [None] * 4, "_name": [None] * 4,
                        "_tax": ["136695976", "LV40003245752", "EE40003245752", "DE136695977"]},
                       schema={"counterparty_key": pl.String, "_tax": pl.String, "_acct": pl.String, "_name": pl.String})
    out = identity.resolve(cps, clients).collect()
    assert out.select("counterparty_key", "client_id", "method").rows() == [
        ("k1", "C1", "tax_id"), ("k2", "C7", "tax_id"),
        ("k3", None, "bank_counterparty"),  # EE40003245752 is no valid Estonian id: proves nothing
        ("k4", None, "bank_counterparty")]  # an invalid prefixed id never matches


def test_no_counterparty_to_resolve_reads_no_crm_client():
    """A night whose file brings no new counterparty resolves none: the CRM's lookups (tax id checks, the fuzzy
    index) are not built, and the empty result has the match table's columns and types."""
    def unreadable():
        raise AssertionError("the CRM clients were read")

    clients = pl.LazyFrame({"client_id": ["C1"]}).map_batches(lambda _: unreadable())
    cps = pl.LazyFrame(schema={"counterparty_key": pl.String, "_tax": pl.String, "_acct": pl.String, "_name": pl.String})
    out = identity.resolve(cps, clients).collect()
    assert out.height == 0 and out.schema == pl.Schema(identity.MATCH_SCHEMA)


def test_the_fuzzy_index_is_built_only_for_a_name_that_needs_it(monkeypatch):
    """Counterparties known by tax id, account or exact name never search the names: the index of every CRM
    name is built for the first one that does (a night's few new payers are usually known by account)."""
    built = []
    real = identity._FuzzyIndex
    monkeypatch.setattr(identity, "_FuzzyIndex", lambda names, ids: built.append(len(names)) or real(names, ids))
    clients = pl.LazyFrame({"client_id": ["A", "B"], "tax_id_key": [None, None], "account_keys": [["DE01"], None],
                            "name_key": ["nord handel", "sued handel"]},
                           schema={"client_id": pl.String, "tax_id_key": pl.String,
                                   "account_keys": pl.List(pl.String), "name_key": pl.String})
    schema = {"counterparty_key": pl.String, "_tax": pl.String, "_acct": pl.String, "_name": pl.String}
    known = pl.LazyFrame([("k1", None, "DE01", "nord handel x"), ("k2", None, None, "sued handel")], schema=schema,
                         orient="row")
    assert identity.resolve(known, clients).collect().select("client_id", "method").rows() == [
        ("A", "account"), ("B", "name_exact")]
    assert built == []
    fuzzy = pl.LazyFrame([("k3", None, None, "nord handle")], schema=schema, orient="row")
    assert identity.resolve(fuzzy, clients, threshold=80).collect().select("client_id", "method").rows() == [
        ("A", "name_fuzzy")]
    assert built == [2]


def test_close_runner_up_is_ambiguous_not_a_match():
    clients = pl.LazyFrame({"client_id": ["A", "B"], "tax_id_key": [None, None], "account_keys": [None, None],
                            "name_key": ["nord handel nord", "nord handel sued"]})
    cps = pl.LazyFrame({"counterparty_key": ["k"], "_tax": [None], "_acct": [None], "_name": ["nord handel"]},
                       schema={"counterparty_key": pl.String, "_tax": pl.String, "_acct": pl.String, "_name": pl.String})
    (row,) = identity.resolve(cps, clients, threshold=70).collect().iter_rows(named=True)
    assert (row["client_id"], row["method"]) == (None, "ambiguous")
    assert row["candidates"].startswith("A:") and "; B:" in row["candidates"]


def test_override_wins_and_unknown_override_target_is_ignored():
    overrides = pl.LazyFrame({"counterparty_key": ["k1", "k2", "k3"], "client_id": ["C6", "NOPE", "-"]})
    result = match([{"counterparty_key": "k1", "_tax": "DE136695976"},
                    {"counterparty_key": "k2", "_name": "ромашка"},
                    {"counterparty_key": "k3", "_name": "muller soehne"}], overrides)
    assert result["k1"] == ("C6", "override", 1.0)
    assert result["k2"] == ("C3", "name_exact", 1.0)
    # '-': not the CRM's Müller (a wrong fuzzy match undone): the counterparty is its own client
    assert result["k3"] == (None, "override_own", 1.0)


def test_fx_conversion_uses_the_latest_rate_and_never_guesses():
    frame = pl.LazyFrame({
        "booking_date": [dt.date(2025, 3, 3), dt.date(2025, 3, 10), dt.date(2025, 3, 3), dt.date(2025, 4, 30)],
        "currency": ["USD", "USD", "EUR", "USD"],
        "amount": [Decimal("100.00"), Decimal("-10.00"), Decimal("5.555"), Decimal("1.00")],
    }, schema={"booking_date": pl.Date, "currency": pl.String, "amount": pl.Decimal(23, 5)})
    rates = pl.LazyFrame({"rate_date": [dt.date(2025, 3, 1), dt.date(2025, 3, 7)], "currency": ["USD", "USD"],
                          "rate": ["0.92", "0.9"]}).with_columns(pl.col("rate").cast(pl.Decimal(18, 8)))
    out = staging.fx_convert(frame, rates, reporting_currency="EUR").collect()
    assert out["amount_reporting"].to_list() == [Decimal("92.00"), Decimal("-9.00"), Decimal("5.56"), None]
    assert out["fx_rate"].to_list()[:3] == [Decimal("0.92"), Decimal("0.9"), Decimal("1")]


DAY0 = dt.date(2025, 3, 1)
_days = st.integers(0, 30).map(lambda n: DAY0 + dt.timedelta(days=n))


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(st.one_of(st.none(), _days), st.sampled_from(["USD", "CZK", "EUR", None])),
                     min_size=1, max_size=40),
       rate_days=st.dictionaries(st.tuples(st.sampled_from(["USD", "CZK"]), _days), st.integers(1, 10**6),
                                 max_size=12),
       max_age=st.integers(0, 9))
def test_fx_conversion_takes_the_latest_rate_no_older_than_the_limit(rows, rate_days, max_age):
    """Against the rule written out row by row: the rate of a row's currency dated on or before its day and at most
    ``max_age`` days older; none (null) without one; the reporting currency at 1; row order kept."""
    frame = pl.LazyFrame({"booking_date": [d for d, _ in rows], "currency": [c for _, c in rows],
                          "amount": [Decimal("100.00")] * len(rows)},
                         schema={"booking_date": pl.Date, "currency": pl.String, "amount": pl.Decimal(23, 5)})
    rates = pl.LazyFrame({"rate_date": [d for _, d in rate_days], "currency": [c for c, _ in rate_days],
                          "rate": [Decimal(r) / 1000 for r in rate_days.values()]},
                         schema={"rate_date": pl.Date, "currency": pl.String, "rate": pl.Decimal(18, 8)})

    def expected(day, currency):
        if currency == "EUR":
            return Decimal(1)
        known = [(d, r) for (c, d), r in rate_days.items() if c == currency and day is not None
                 and d <= day and (day - d).days <= max_age]
        return Decimal(max(known)[1]) / 1000 if known else None

    out = staging.fx_convert(frame, rates, reporting_currency="EUR", max_rate_age_days=max_age).collect()
    assert out["fx_rate"].to_list() == [expected(d, c) for d, c in rows]
    assert out["booking_date"].to_list() == [d for d, _ in rows]


def test_daily_rates_span_the_rates_not_the_rows():
    rates = pl.LazyFrame({"rate_date": [dt.date(2025, 3, 1), dt.date(2025, 3, 5), dt.date(2025, 3, 2)],
                          "currency": ["USD", "USD", "CZK"], "rate": [Decimal("0.9"), Decimal("0.8"), Decimal("0.04")]},
                         schema={"rate_date": pl.Date, "currency": pl.String, "rate": pl.Decimal(18, 8)})
    days = staging.daily_rates(rates, 2).sort("currency", "booking_date").collect()
    assert days.rows() == [
        ("CZK", dt.date(2025, 3, 2), Decimal("0.04")), ("CZK", dt.date(2025, 3, 3), Decimal("0.04")),
        ("CZK", dt.date(2025, 3, 4), Decimal("0.04")),
        ("USD", dt.date(2025, 3, 1), Decimal("0.9")), ("USD", dt.date(2025, 3, 2), Decimal("0.9")),
        ("USD", dt.date(2025, 3, 3), Decimal("0.9")), ("USD", dt.date(2025, 3, 4), None),  # 3 days old: past 2
        ("USD", dt.date(2025, 3, 5), Decimal("0.8")), ("USD", dt.date(2025, 3, 6), Decimal("0.8")),
        ("USD", dt.date(2025, 3, 7), Decimal("0.8")),
    ]


def test_fx_conversion_leaves_amounts_beyond_reporting_money_null():
    """Raw holds 18 digits before the point, reporting money 16: larger converted amounts stay null (the staged
    gate names them) instead of failing the cast."""
    frame = pl.LazyFrame({
        "booking_date": [dt.date(2025, 3, 3)] * 4,
        "currency": ["EUR", "EUR", "USD", "USD"],
        "amount": [Decimal("9999999999999999.99"), Decimal("-10000000000000000"), Decimal("10000000000000"),
                   Decimal("100")],
    }, schema={"booking_date": pl.Date, "currency": pl.String, "amount": pl.Decimal(23, 5)})
    rates = pl.LazyFrame({"rate_date": [dt.date(2025, 3, 1)], "currency": ["USD"],
                          "rate": [Decimal("1000")]}).with_columns(pl.col("rate").cast(pl.Decimal(18, 8)))
    out = staging.fx_convert(frame, rates, reporting_currency="EUR").collect()
    assert out["amount_reporting"].to_list() == [Decimal("9999999999999999.99"), None, None, Decimal("100000.00")]
    assert out["fx_rate"].to_list() == [Decimal(1), Decimal(1), Decimal(1000), Decimal(1000)]
    without_rates = staging.fx_convert(frame, None, reporting_currency="EUR").collect()
    assert without_rates["amount_reporting"].to_list() == [Decimal("9999999999999999.99"), None, None, None]
