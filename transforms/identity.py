"""Client identity: which CRM client is behind each bank counterparty (DOMAIN §9, issue 4).

Order of evidence, first match wins:
1. a manual override (counterparty key -> client id) from the user's overrides file; ``-`` as the client id says
   "no CRM client: the counterparty is its own client" (undoes a wrong name match);
2. the tax id, normalised and checksum-validated with python-stdnum (EU VAT, Russian INN, Chinese USCC, and
   any country's VAT module by its prefix); an invalid tax id is never used to match;
3. the account (IBAN / account number);
4. the normalised company name (legal forms in many languages and scripts stripped, case, quotes, punctuation,
   accents and German umlauts folded): equal names first, then fuzzy (rapidfuzz ``token_sort_ratio``) above a
   threshold, with token blocking so a million counterparties against 100k clients takes minutes, not hours.

A fuzzy best candidate that is not clearly ahead of the runner-up is *ambiguous* and is not matched, and so is a
name (equal or fuzzy) whose CRM client has another valid tax id than the counterparty's (two legal entities);
every counterparty keeps its best candidates so a person can decide (the ``unmatched_counterparties`` mart).
Pure functions: frames in, frames out; no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from functools import lru_cache

import polars as pl

from transforms import digests

LEGAL_FORMS = (
    "gmbh", "mbh", "co", "kg", "ohg", "gbr", "ek", "ag", "se", "ug", "llc", "llp", "lp", "ltd", "limited", "inc",
    "incorporated", "corp", "corporation", "company", "plc", "bv", "nv", "vof", "sa", "sas", "sarl", "sasu", "sl",
    "slu", "spa", "srl", "sro", "as", "asa", "sia", "uab", "ab", "oy", "oyj", "ou", "oü", "aps", "kft", "zrt",
    "doo", "dd", "ltda", "pte", "pvt", "bhd", "sdn", "kk", "gk", "ооо", "оао", "зао", "пао", "ао", "нао", "ип",
    "тоо", "чп", "одо", "уп", "тов", "пп", "oue",
    # connectors that one side writes and the other drops ('Müller und Söhne' / 'Müller & Söhne')
    "und", "and", "et", "the",
)
# LEGAL_FORMS without the connectors and the forms of a sole trader whose name is by law the person's name (ИП,
# ЧП, ПП): the forms that say a name is a company's (``is_company_name``). A German e.K.'s name is its firm in the
# commercial register, a business name ('Nord Einzelhandel e.K.'), so it counts
COMPANY_FORMS = tuple(f for f in LEGAL_FORMS if f not in {"und", "and", "et", "the", "ип", "чп", "пп"})
_LEGAL_SEQUENCES = ("sp z oo", "s z oo", "gesellschaft mbh", "gesellschaft mit beschraenkter haftung",
                    "limited liability company", "public limited company", "besloten vennootschap")
# company forms written out, as ``_padded_words`` folds them (й -> и): only to tell a company, never stripped
_COMPANY_WORDS = ("общество с ограниченнои ответственностью", "акционерное общество", "aktiengesellschaft",
                  "kommanditgesellschaft", "товариство з обмеженою відповідальністю")
_CJK_SUFFIXES = ("股份有限公司", "有限责任公司", "有限公司", "集团公司", "集团", "公司", "株式会社", "有限会社")
_UMLAUTS = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"}
# letters Unicode does not decompose into a base letter and a mark
_LETTERS = {"ł": "l", "đ": "d", "ø": "o", "æ": "ae", "œ": "oe", "ı": "i", "ħ": "h"}
METHODS_CRM = ("override", "tax_id", "account", "name_exact", "name_fuzzy")
# a counterparty that is its own client: no CRM match, a person said so (an override to OWN_CLIENT), or unsure
METHODS = (*METHODS_CRM, "override_own", "bank_counterparty", "ambiguous")
OWN_CLIENT = "-"  # the overrides file's client_id for "not a CRM client: its own (bank) client"


def normalise_company_name(expr: pl.Expr) -> pl.Expr:
    """Company name for matching: 'Müller & Söhne GmbH & Co. KG' -> 'mueller soehne'; empty -> null.

    German umlauts fold as German writes them without (ü -> ue: 'MUELLER'); every other accent is dropped
    ('Société Générale' -> 'societe generale', 'Łódź' -> 'lodz', 'Берёзка' -> 'березка'), as SEPA exports write
    names in plain letters; composed and decomposed spellings of a letter are the same."""
    padded = _padded_words(expr)
    for suffix in _CJK_SUFFIXES:
        padded = padded.str.replace_all(re.escape(suffix) + r"\s*$", " ")
    for sequence in _LEGAL_SEQUENCES:
        padded = padded.str.replace_all(" " + sequence + " ", " ", literal=True)
    forms = "|".join(sorted(LEGAL_FORMS, key=len, reverse=True))
    # twice: the regex consumes the separating space, so adjacent forms ('gmbh co kg') need a second pass
    for _ in range(2):
        padded = padded.str.replace_all(rf" (?:{forms})(?: |$)", " ")
    cleaned = padded.str.replace_all(r"\s+", " ").str.strip_chars()
    return pl.when(cleaned.str.len_chars() > 0).then(cleaned)


def is_company_name(expr: pl.Expr) -> pl.Expr:
    """Whether a name as the bank wrote it reads as a company's: it carries a company legal form ('GmbH',
    'Sp. z o.o.', 'ООО', 'SIA', 'e.K.', '有限公司', ...). A form of one or two letters ('AS', 'Co', 'SA', 'AG')
    counts only as the first or the last word, where forms stand ('AS Rīgas Koks', 'Meyer & Co'): in the middle
    it is as likely part of a person's name ('José Sá Silva'). A sole trader's form whose name is the person's by
    law ('ИП', 'ЧП', 'ФОП') does not count, nor do the connectors ``LEGAL_FORMS`` strips for matching ('and',
    'the'). A payer whose name carries none may be a person: its name is personal data (issue 7: the marts carry
    company names only). Null for a null name."""
    padded = _padded_words(expr)
    words = sorted((*COMPANY_FORMS, *_LEGAL_SEQUENCES, *_COMPANY_WORDS), key=len, reverse=True)
    anywhere = "|".join(re.escape(w) for w in words if len(w) > 2)
    short = "|".join(re.escape(w) for w in words if len(w) <= 2)
    suffixes = "|".join(re.escape(s) for s in _CJK_SUFFIXES)
    return padded.str.contains(rf" (?:{anywhere}) |^ (?:{short}) | (?:{short}) $|{suffixes}")


BANK_NAMES = ("companies", "all")  # settings identity.bank_names: which names the bank wrote may name a client


def all_bank_names(bank_names: str) -> bool:
    """Whether ``bank_names`` (``BANK_NAMES``) lets every name the bank wrote into the marts, or only those that
    read as a company's (``is_company_name``)."""
    if bank_names not in BANK_NAMES:
        raise ValueError(f"bank_names must be one of {BANK_NAMES}, not {bank_names!r}")
    return bank_names == "all"


def _padded_words(expr: pl.Expr) -> pl.Expr:
    """The name folded (case, accents, umlauts, quotes, punctuation) into space-separated words, with a space at
    either end."""
    folded = expr.str.normalize("NFC").str.to_lowercase()
    for umlaut, repl in _UMLAUTS.items():
        folded = folded.str.replace_all(umlaut, repl, literal=True)
    folded = folded.str.normalize("NFKD").str.replace_all(r"\p{M}", "")
    for letter, repl in _LETTERS.items():
        folded = folded.str.replace_all(letter, repl, literal=True)
    folded = (
        folded.str.replace_all(r"[\"'«»„“”`’‘]", "")
        .str.replace_all(r"\.", "")
        .str.replace_all(r"[^\w]+", " ")
    )
    return pl.concat_str([pl.lit(" "), folded, pl.lit(" ")])


@lru_cache(maxsize=1_000_000)
def valid_tax_id(value: str) -> bool:
    """Checksum validation with python-stdnum: EU VAT (any member state), RU INN, CN USCC, and any other
    country's VAT module by its two-letter prefix."""
    from stdnum import get_cc_module
    from stdnum.cn import uscc
    from stdnum.eu import vat
    from stdnum.ru import inn

    if value.isdigit():  # no country prefix: national numbers of the markets we serve
        from stdnum.cz import dic
        from stdnum.pl import nip
        from stdnum.ua import edrpou

        return any(module.is_valid(value) for module in (inn, nip, dic, edrpou))
    if uscc.is_valid(value):
        return True
    if vat.is_valid(value):
        return True
    prefix = value[:2].lower()
    if prefix.isalpha():
        module = get_cc_module(prefix, "vat")
        if module is not None:
            try:
                return bool(module.is_valid(value[2:]) or module.is_valid(value))
            except Exception:  # some modules raise on odd input instead of answering False
                return False
    return False


def counterparty_key() -> pl.Expr:
    """The key of a row's own identifiers, for a row in no counterparty group (``counterparty_groups`` keys every
    other row): an own transfer, known by its account. Its tax id when that passes its checksum (payment orders
    carry '0' or a mistyped id, which would make unrelated payers one), else its account."""
    return pl.coalesce(
        pl.concat_str([pl.lit("tax:"), pl.when(pl.col("_tax_valid")).then(pl.col("_tax"))]),
        pl.concat_str([pl.lit("acct:"), pl.col("_acct")]),
    )


NAME_KEY = r"name:[0-9a-f]{16}"  # what ``name_key`` gives


def name_key(normalised_name: pl.Expr) -> pl.Expr:
    """The key of a counterparty known by its name alone: 'name:' and 16 hex digits of the normalised name's
    BLAKE2b hash. Not the name itself: the key is the bank client's id in the marts, and a payer known only by
    name may be a person (issue 7: no people's names in the marts). Stable across runs, machines and versions
    (unlike ``Expr.hash``). Applied to distinct names: it runs in Python."""
    return normalised_name.map_elements(name_digest, return_dtype=pl.String, skip_nulls=True)


def name_digest(name: str) -> str:
    return "name:" + hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


def override_keys(overrides: pl.LazyFrame) -> pl.LazyFrame:
    """The overrides file with each ``name:`` key written as a name ('name:Acme Trading') turned into that name's
    key (``name_key``), so a person can write the name; other keys as written."""
    key = pl.col("counterparty_key")
    written = key.str.starts_with("name:") & ~key.str.contains(f"^{NAME_KEY}$")
    return overrides.with_columns(counterparty_key=pl.when(written).then(
        name_key(normalise_company_name(key.str.slice(5)))).otherwise(key))


EVIDENCE_SCHEMA = {"tax_id": pl.String, "account": pl.String, "name": pl.String}
GROUPS_SCHEMA = {**EVIDENCE_SCHEMA, "counterparty_key": pl.String}


def evidence_columns() -> list[pl.Expr]:
    """A normalised row's identifiers (``_normalised``'s columns) as ``EVIDENCE_SCHEMA``: a tax id only when it
    passes its checksum."""
    return [pl.when(pl.col("_tax_valid")).then(pl.col("_tax")).alias("tax_id"), pl.col("_acct").alias("account"),
            pl.col("_name").alias("name")]


def counterparty_groups(evidence: pl.LazyFrame) -> pl.LazyFrame:
    """The counterparty key of each combination of identifiers a counterparty was seen with (``EVIDENCE_SCHEMA``:
    normalised valid tax id, account, name; one row per distinct combination, ``GROUPS_SCHEMA``).

    Rows of one payer do not always carry the same identifiers: a payment order with the tax id left out or
    written '0', the same account exported as camt (IBAN only) and as 1C (INN and account), a CSV without
    accounts. Keyed row by row they would be two clients in bank-only mode. So, with no order dependence:

    1. a valid tax id is the key (``tax:``);
    2. an account seen with exactly one valid tax id belongs to it; an account never seen with one is its own key
       (``acct:``); one seen with several (a shared or transit account) keys only its rows without a tax id;
    3. a name seen with nothing else takes the one key its rows with an account or tax id have, when they have
       exactly one; else (none, or several: two companies of one name) the name's key (``name_key``).

    Two accounts are never joined by a name alone ('Müller GmbH' and 'Müller KG' fold to the same name), nor two
    tax ids by anything.
    """
    seen = evidence.select(*EVIDENCE_SCHEMA).unique()
    account_tax = (
        seen.filter(pl.col("tax_id").is_not_null() & pl.col("account").is_not_null())
        .group_by("account").agg(pl.col("tax_id").unique())
        .filter(pl.col("tax_id").list.len() == 1)
        .select("account", pl.col("tax_id").list.first().alias("_account_tax"))
    )
    keyed = seen.join(account_tax, on="account", how="left").with_columns(_key=pl.coalesce(
        pl.concat_str([pl.lit("tax:"), pl.coalesce("tax_id", "_account_tax")]),
        pl.concat_str([pl.lit("acct:"), pl.col("account")])))
    key_of_name = (
        keyed.filter(pl.col("_key").is_not_null() & pl.col("name").is_not_null())
        .group_by("name").agg(pl.col("_key").unique())
        .filter(pl.col("_key").list.len() == 1)
        .select("name", pl.col("_key").list.first().alias("_name_key"))
    )
    return (
        keyed.join(key_of_name, on="name", how="left")
        .select(*EVIDENCE_SCHEMA, counterparty_key=pl.coalesce("_key", "_name_key", name_key(pl.col("name"))))
        .sort(*EVIDENCE_SCHEMA, nulls_last=True)
    )


def _tokens(name: str) -> list[str]:
    return [t for t in name.split() if len(t) >= 3] or name.split()


class _FuzzyIndex:
    """Token-blocked candidate search over client names (rare tokens first)."""

    def __init__(self, names: list[str], ids: list[str], max_share: float = 0.05):
        self.names, self.ids = names, ids
        self.by_token: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(names):
            for token in set(_tokens(name)):
                self.by_token[token].append(i)
        limit = max(50, int(len(names) * max_share))
        self.common = {t for t, rows in self.by_token.items() if len(rows) > limit}
        self._pairs: dict[tuple[str, ...], set[int]] = {}

    def _shared(self, tokens: tuple[str, ...]) -> set[int]:
        """Clients holding all of ``tokens`` (cached: a few hundred token pairs cover most queries)."""
        cached = self._pairs.get(tokens)
        if cached is None:
            cached = set(self.by_token[tokens[0]])
            for token in tokens[1:]:
                cached &= set(self.by_token[token])
            self._pairs[tokens] = cached
        return cached

    def best(self, query: str, limit: int = 3) -> list[tuple[str, float]]:
        from rapidfuzz import fuzz, process

        tokens = [t for t in set(_tokens(query)) if t in self.by_token]
        candidates: set[int] = set()
        for token in tokens:
            if token not in self.common:
                candidates.update(self.by_token[token])
        if not candidates and tokens:
            # every token is common ('nord', 'handel'): block on the names sharing the two rarest tokens
            rarest = sorted(tokens, key=lambda t: (len(self.by_token[t]), t))[:2]
            candidates = self._shared(tuple(rarest))
        if not candidates:
            return []
        pool = sorted(candidates)
        hits = process.extract(query, [self.names[i] for i in pool], scorer=fuzz.token_sort_ratio, limit=limit * 3)
        best: dict[str, float] = {}
        for _, score, position in hits:
            client = self.ids[pool[position]]
            best[client] = max(best.get(client, 0.0), float(score))
        return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


MATCH_SCHEMA = {
    "counterparty_key": pl.String, "client_id": pl.String, "method": pl.String, "confidence": pl.Float64,
    "tax_id_valid": pl.Boolean, "candidates": pl.String,
}


# what ``resolve`` reads of the CRM clients: the id and the three normalised identifiers
CLIENT_COLUMNS = ("client_id", "tax_id_key", "account_keys", "name_key")


def clients_digest(clients: pl.LazyFrame | None) -> str:
    """A digest of what ``resolve`` reads of ``clients`` (``CLIENT_COLUMNS``, row order included: the fuzzy index
    keeps it): the same counterparties, overrides and threshold resolve to the same rows against two CRM exports
    with equal digests, whatever else of the clients changed (region, manager, flags). ``"none"`` without a CRM.
    Comparable within one polars version (its row hashes)."""
    if clients is None:
        return "none"
    n, h1, h2 = clients.select(CLIENT_COLUMNS).with_row_index("_position").select(
        digests.row_hash_sums(pl.all())).collect().row(0)
    return f"{n}:{h1}:{h2}"


def resolve(
    counterparties: pl.LazyFrame,
    clients: pl.LazyFrame | None,
    overrides: pl.LazyFrame | None = None,
    *,
    threshold: float = 90.0,
    margin: float = 3.0,
) -> pl.LazyFrame:
    """One row per counterparty key: the CRM client it is, how we know, and how sure we are.

    ``counterparties``: ``counterparty_key, _tax, _acct, _name`` (normalised keys). ``clients``: the CRM clients,
    of which only ``CLIENT_COLUMNS`` are read, in their row order (``clients_digest``). ``overrides``:
    ``counterparty_key, client_id``.
    """
    cps = counterparties.select("counterparty_key", "_tax", "_acct", "_name").unique(
        subset="counterparty_key", keep="first", maintain_order=True).collect()
    taxes = [t for t in cps["_tax"].drop_nulls().unique().to_list()]
    valid = pl.DataFrame({"_tax": taxes, "tax_id_valid": [valid_tax_id(t) for t in taxes]},
                         schema={"_tax": pl.String, "tax_id_valid": pl.Boolean})
    cps = cps.join(valid, on="_tax", how="left", maintain_order="left")
    if clients is None or cps.is_empty():  # (a night's file often brings no new counterparty: no CRM lookups)
        return cps.select(
            "counterparty_key", pl.lit(None, pl.String).alias("client_id"), pl.lit("bank_counterparty").alias("method"),
            pl.lit(None, pl.Float64).alias("confidence"), "tax_id_valid", pl.lit(None, pl.String).alias("candidates"),
        ).lazy()
    crm = clients.select(CLIENT_COLUMNS).collect()

    def unique_map(frame: pl.DataFrame, key: str) -> dict[str, str]:
        grouped = frame.filter(pl.col(key).is_not_null()).group_by(key).agg(pl.col("client_id").unique())
        return {k: ids[0] for k, ids in grouped.iter_rows() if len(ids) == 1}

    crm_taxes = crm.filter(pl.col("tax_id_key").is_not_null()).with_columns(
        pl.col("tax_id_key").cast(pl.String)).with_columns(
        _valid=pl.col("tax_id_key").map_elements(valid_tax_id, return_dtype=pl.Boolean),
        _prefixed=pl.col("tax_id_key").str.contains(r"^[A-Z]{2}"))
    by_tax = unique_map(crm_taxes.filter("_valid"), "tax_id_key")
    # one side with the country prefix, the other without ('LV40003245752' / '40003245752'): the same id when the
    # prefixed one is valid and the numbers are equal
    national = unique_map(crm_taxes.filter("_valid" & pl.col("_prefixed"))
                          .with_columns(pl.col("tax_id_key").str.slice(2)), "tax_id_key")
    plain = unique_map(crm_taxes.filter(~pl.col("_prefixed")), "tax_id_key")

    def tax_match(tax: str | None, tax_ok: bool | None) -> str | None:
        if tax is None:
            return None
        if tax_ok and tax in by_tax:
            return by_tax[tax]
        if tax[:2].isalpha():
            return plain.get(tax[2:]) if tax_ok else None
        return national.get(tax)
    # the account and name lookups hold the keys the counterparties have (each key with all its CRM rows, so
    # a key's uniqueness is the same), and the fuzzy index is built for the first name that needs it: a night
    # with a few new counterparties does not index every CRM client
    by_acct = unique_map(crm.select("client_id", pl.col("account_keys").cast(pl.List(pl.String)))
                         .explode("account_keys").filter(pl.col("account_keys").is_in(cps["_acct"].drop_nulls()
                                                                                        .implode())), "account_keys")
    names = crm.filter(pl.col("name_key").is_not_null())
    asked = names.filter(pl.col("name_key").is_in(cps["_name"].drop_nulls().implode()))
    by_name = unique_map(asked, "name_key")
    ambiguous_names = set(asked.group_by("name_key").agg(pl.col("client_id").n_unique().alias("n"))
                          .filter(pl.col("n") > 1)["name_key"].to_list())
    index: _FuzzyIndex | None = None
    # two different valid tax ids are two legal entities, whatever their names say
    client_tax = {c: t for t, c in by_tax.items()}

    def other_entity(client_id: str, tax: str | None, tax_ok: bool | None) -> bool:
        return bool(tax_ok) and client_id in client_tax and client_tax[client_id] != tax
    known = set(crm["client_id"].to_list())
    override_map = {}
    if overrides is not None:
        override_map = {k: v for k, v in overrides.collect().select("counterparty_key", "client_id").iter_rows()
                        if v in known or v == OWN_CLIENT}

    rows = []
    for key, tax, acct, name, tax_ok in cps.select("counterparty_key", "_tax", "_acct", "_name",
                                                    "tax_id_valid").iter_rows():
        client, method, confidence, candidates = None, "bank_counterparty", None, None
        if key in override_map and override_map[key] == OWN_CLIENT:
            method, confidence = "override_own", 1.0
        elif key in override_map:
            client, method, confidence = override_map[key], "override", 1.0
        elif (by_id := tax_match(tax, tax_ok)) is not None:
            client, method, confidence = by_id, "tax_id", 1.0
        elif acct is not None and acct in by_acct:
            client, method, confidence = by_acct[acct], "account", 1.0
        elif name is not None and name in by_name and not other_entity(by_name[name], tax, tax_ok):
            client, method, confidence = by_name[name], "name_exact", 1.0
        elif name is not None:
            if index is None:
                index = _FuzzyIndex(names["name_key"].to_list(), names["client_id"].to_list())
            best = index.best(name)
            candidates = "; ".join(f"{c}:{s:.1f}" for c, s in best) or None
            if name in ambiguous_names or name in by_name:  # by_name here: the same name, another tax id
                method = "ambiguous"
            elif best and best[0][1] >= threshold:
                if other_entity(best[0][0], tax, tax_ok):
                    method = "ambiguous"
                elif len(best) == 1 or best[0][1] - best[1][1] >= margin:
                    client, method, confidence = best[0][0], "name_fuzzy", round(best[0][1] / 100, 4)
                else:
                    method = "ambiguous"
        rows.append((key, client, method, confidence, tax_ok, candidates))
    return pl.DataFrame(rows, schema=MATCH_SCHEMA, orient="row").lazy()
