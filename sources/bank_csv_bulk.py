"""The fast path for bank CSV files: DuckDB parses and types the rows, Python only transcodes.

Same profiles and the same rules as ``bank_csv.read`` (which stays the reference implementation: a parity
test runs both on every fixture, a property test on random whitespace and values). The file is transcoded to
UTF-8 in Python when its encoding is not UTF-8 (DuckDB's reader has no cp1250/cp1251/cp1252/cp1257), then one
SQL statement reads it with ``read_csv`` (every field as text), drops blank and skip rows, numbers the records,
types every field, signs the amount and names the reason of every row it cannot accept, into a temp table;
accepted rows go to ``raw.bank_transaction``, the rest to ``ops.quarantine``. Profile values (separators, date
format, maps) are bound parameters; only generated column names and code constants are SQL text.

Where the time goes (1M generic rows, one thread): ``read_csv`` ~0.3 s, cleaning whitespace ~0.35 s, typing
~0.5 s, the temp table ~0.3 s, the insert into ``raw`` ~1.0 s. What keeps it cheap: no window sort for the
record numbers, a blank-row test that looks at the first character, one whitespace test per row (a memchr per
whitespace character, ``columnar.sql_may_need_clean``) before any regex, DuckDB's slow ``trim`` only on values
with a space at an end, and every sub-expression of the amount as a column of its own (computed once, not once
per use).
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import duckdb

from clientbase.errors import ParseError
from sources.bank_csv import Layout, own_account_from_preamble
from sources.base import MAX_AMOUNT_DIGITS, MAX_AMOUNT_SCALE
from sources.columnar import SPACE, SQL_NOT_SPACE, sql_clean, sql_literal, sql_may_need_clean

_CHUNK = 1 << 20


def _utf8_copy(path: Path, layout: Layout, scratch: Path) -> tuple[Path, int]:
    """(file DuckDB can read, lines to skip before the header)."""
    if layout.encoding in ("utf-8", "utf-8-sig"):
        return path, layout.header_line
    target = Path(tempfile.mkstemp(suffix=".csv", dir=scratch)[1])
    with path.open("rb") as raw, target.open("w", encoding="utf-8", newline="") as out:
        text = io.TextIOWrapper(raw, encoding=layout.encoding, errors="strict", newline="")
        for _ in range(layout.header_line):
            text.readline()
        shutil.copyfileobj(text, out, _CHUNK)
    return target, 0


def _field(layout: Layout, name: str, columns: dict[str, str]) -> str:
    """SQL text of a field: ``base.clean`` of its column(s), joined by a space; NULL if unmapped or empty."""
    parts = [sql_clean(columns[h], "spaced") for h in layout.profile.headers(name) if h in columns]
    if not parts:
        return "NULL::VARCHAR"
    return parts[0] if len(parts) == 1 else f"nullif(concat_ws(' ', {', '.join(parts)}), '')"


def _money(name: str) -> tuple[list[list[str]], str, str]:
    """(columns of three layers, typed amount or NULL, reason or NULL) for the text column ``<name>_text``
    with the rules of ``sources.base.parse_decimal``. Each step is a column of its own layer, so every
    expression runs once per row: the value and the reason share the regex and the scale."""
    expr = f"{name}_text"
    spaced = f"replace(replace({expr}, chr(160), ' '), chr(8239), ' ')"
    no_thousands = f"(CASE WHEN $thousands IS NOT NULL THEN replace({spaced}, $thousands, '') ELSE {spaced} END)"
    compact = f"(CASE WHEN coalesce($thousands, '') <> ' ' THEN replace({no_thousands}, ' ', '') ELSE {no_thousands} END)"
    bad_dot = f"($decimal <> '.' AND contains({name}_compact, '.') AND coalesce($thousands, '') <> '.')"
    dotted = f"(CASE WHEN $decimal <> '.' THEN replace({name}_compact, $decimal, '.') ELSE {name}_compact END)"
    number = f"regexp_full_match({name}_dotted, '[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)')"
    # used only when the regex matched ([0-9] and at most one '.'): the digits after the dot
    scale = f"(CASE WHEN contains({name}_dotted, '.') THEN strlen({name}_dotted) - strpos({name}_dotted, '.') ELSE 0 END)"
    # and the digits before it, leading zeros left out
    digits = f"strlen(ltrim(split_part(ltrim({name}_dotted, '+-'), '.', 1), '0'))"
    layers = [[f"{compact} AS {name}_compact"],
              [f"{bad_dot} AS {name}_bad_dot", f"{dotted} AS {name}_dotted"],
              [f"{number} AS {name}_number", f"{scale} AS {name}_scale", f"{digits} AS {name}_digits"]]
    ok, bad, sc, dg = f"{name}_number", f"{name}_bad_dot", f"{name}_scale", f"{name}_digits"
    value = (f"(CASE WHEN {ok} AND NOT {bad} AND {sc} <= {MAX_AMOUNT_SCALE} AND {dg} <= {MAX_AMOUNT_DIGITS} "
             f"THEN CAST({name}_dotted AS DECIMAL(23, 5)) END)")
    reason = (f"(CASE WHEN {bad} THEN format('amount ''{{}}'' has ''.'' but the layout''s decimal separator is ''{{}}''', {expr}, $decimal) "
              f"WHEN NOT {ok} THEN format('amount ''{{}}'' is not a number', {expr}) "
              f"WHEN {sc} > {MAX_AMOUNT_SCALE} THEN format('amount ''{{}}'' has more than {MAX_AMOUNT_SCALE} decimals', {expr}) "
              f"WHEN {dg} > {MAX_AMOUNT_DIGITS} THEN format('amount ''{{}}'' has more than {MAX_AMOUNT_DIGITS} digits before the "
              f"decimal point', {expr}) END)")
    return layers, value, reason


_EDGE_SPACE = f"^{SPACE}+|{SPACE}+$"

_READ_CSV = ("read_csv($path, delim=$delim, quote='\"', escape='\"', header=true, all_varchar=true, skip=$skip, "
             "null_padding=true, strict_mode=true, auto_detect=false, columns=$columns, parallel=false)")


def load(con: duckdb.DuckDBPyConnection, path: Path, layout: Layout, *, file_hash: str, source_file: str,
         run_id: str, scratch: Path) -> tuple[int, int]:
    """Load one CSV file; returns (rows loaded, rows quarantined). The caller owns the transaction."""
    own_account = own_account_from_preamble(layout, str(path))
    readable, skip = _utf8_copy(path, layout, scratch)
    try:
        _type_rows(con, readable, skip, layout, own_account, str(path))
    finally:
        if readable != path:
            readable.unlink(missing_ok=True)
    con.execute("""
        INSERT INTO raw.bank_transaction BY NAME
        SELECT $file_hash AS file_hash, $source_file AS source_file, record_number, NULL::INTEGER AS source_line,
               'bank_csv' AS reader, own_account, booking_date, value_date, amount, currency, counterparty_name,
               counterparty_tax_id, counterparty_account, counterparty_bic, purpose, bank_reference, end_to_end_id,
               status, false AS is_reversal
        FROM _csv_typed WHERE reason IS NULL""",  # no ORDER BY: _csv_typed is in record order, and so stays raw
                {"file_hash": file_hash, "source_file": source_file})
    con.execute("""
        INSERT INTO ops.quarantine BY NAME
        SELECT $file_hash AS file_hash, $source_file AS source_file, record_number, NULL::INTEGER AS source_line,
               reason, left(raw_record, 2000) AS raw_record, $run_id AS run_id
        FROM _csv_typed WHERE reason IS NOT NULL ORDER BY record_number""",
                {"file_hash": file_hash, "source_file": source_file, "run_id": run_id})
    (loaded, quarantined), = con.execute(
        "SELECT count(*) FILTER (WHERE reason IS NULL), count(*) FILTER (WHERE reason IS NOT NULL) "
        "FROM _csv_typed").fetchall()
    con.execute("DROP TABLE _csv_typed")
    return loaded, quarantined


def _type_rows(con: duckdb.DuckDBPyConnection, readable: Path, skip: int, layout: Layout, own_account: str | None,
               name: str) -> None:
    """Read, number and type every row into ``_csv_typed`` in one statement.

    ``read_csv`` is single-threaded (``parallel=false``): DuckDB's parallel scanner refuses quoted line breaks
    (a purpose text over two lines) together with padding short rows, and it was not faster here. That also
    makes the pipeline one ordered stream, so ``row_number() OVER ()`` above the blank-row filter numbers the
    records in file order without a window sort. A file DuckDB cannot read is a clean error naming it."""
    profile = layout.profile
    columns = {h: f"c{i}" for i, h in reversed(list(enumerate(layout.header)))}  # first occurrence wins
    every = [f"c{i}" for i in range(len(layout.header))]
    params: dict[str, object] = {
        "thousands": profile.thousands, "decimal": profile.decimal, "date_format": profile.date_format,
        "own_account": own_account, "currency": profile.currency, "delim": profile.delimiter,
        "dir_keys": list(profile.direction_map), "dir_sides": list(profile.direction_map.values()),
        "status_keys": list(profile.status_map), "status_values": list(profile.status_map.values()),
        "path": str(readable), "skip": skip, "columns": {c: "VARCHAR" for c in every},
    }
    skips = []
    for n, (column, values) in enumerate(profile.skip_rows.items()):
        if column in columns:
            params[f"skip{n}"] = list(values)
            stripped = f"regexp_replace({columns[column]}, {sql_literal(_EDGE_SPACE)}, '', 'g')"  # str.strip()
            skips.append(f"list_contains($skip{n}, {stripped})")
    f = {name: _field(layout, name, columns) for name in (
        "own_account", "booking_date", "value_date", "amount", "debit", "credit", "direction", "currency",
        "counterparty_name", "counterparty_name_when_debit", "counterparty_tax_id", "counterparty_account",
        "counterparty_account_when_debit", "counterparty_bic", "purpose", "bank_reference", "end_to_end_id",
        "status")}
    if "debit" in profile.columns:
        debit_layers, debit, debit_reason = _money("debit")
        credit_layers, credit, credit_reason = _money("credit")
        layers = [d + c for d, c in zip(debit_layers, credit_layers, strict=True)]
        amount = f"(CASE WHEN debit_text IS NOT NULL THEN -abs({debit}) ELSE abs({credit}) END)"
        # as the reference: each filled column is read (debit first) before exactly one must be filled
        amount_reason = (f"coalesce({debit_reason}, {credit_reason}, CASE WHEN (debit_text IS NULL) = "
                         "(credit_text IS NULL) THEN 'exactly one of the debit and credit columns must be filled' END)")
    else:
        layers, signed, signed_reason = _money("amount")
        side = "$dir_sides[list_position($dir_keys, coalesce(direction_text, ''))]"
        if "direction" in profile.columns:
            amount = f"(CASE WHEN {side} = 'debit' THEN -abs({signed}) ELSE abs({signed}) END)"
            direction_reason = (f"WHEN {side} IS NULL THEN format('direction {{}} is not one of {{}}', "
                                "CASE WHEN direction_text IS NULL THEN 'None' ELSE '''' || direction_text || '''' END, "
                                "'[' || array_to_string(list_transform(list_sort($dir_keys), lambda k: '''' || k || ''''), "
                                "', ') || ']')")
        else:
            amount, direction_reason = signed, ""
        amount_reason = (f"(CASE WHEN amount_text IS NULL THEN 'amount is empty' "
                         f"WHEN {signed_reason} IS NOT NULL THEN {signed_reason} {direction_reason} END)")
    booking = "try_strptime(booking_text, $date_format)::DATE"
    value_date = "try_strptime(value_text, $date_format)::DATE"
    date_reason = ("(CASE WHEN booking_text IS NULL THEN 'booking date is empty' "
                   "WHEN booking_value IS NULL THEN format('date ''{}'' does not match the format ''{}''', "
                   "booking_text, $date_format) "
                   "WHEN value_text IS NOT NULL AND value_date_value IS NULL THEN format('date ''{}'' does not match "
                   "the format ''{}''', value_text, $date_format) END)")
    status = "$status_values[list_position($status_keys, status_text)]"
    status_reason = ("(CASE WHEN status_text IS NOT NULL AND len($status_keys) > 0 AND status_value IS NULL THEN "
                     "format('unknown status ''{}''; the profile knows {}', status_text, '[' || array_to_string("
                     "list_transform(list_sort($status_keys), lambda k: '''' || k || ''''), ', ') || ']') END)")
    account = "replace(coalesce(account_text, $own_account), ' ', '')"
    currency = "upper(coalesce(currency_text, $currency))"
    # A row is blank when every field is whitespace (str.strip() gives ''); most rows start with a printable ASCII
    # character, which settles it without looking at every field.
    kept = (f"(left(coalesce({every[0]}, ''), 1) BETWEEN '!' AND '~' "
            f"OR regexp_matches(concat({', '.join(every)}), {sql_literal(SQL_NOT_SPACE)}))")
    mapped = sorted({columns[h] for field in f for h in profile.headers(field) if h in columns},
                    key=lambda c: int(c[1:]))  # the columns some field reads
    # the values are parts of the row's text, so a row without such whitespace needs at most its ends trimmed
    spaced = sql_may_need_clean(f"concat({', '.join(mapped)})") if mapped else "false"
    money_layers = "".join(  # generated column names and code constants only
        f"), money{n} AS (SELECT *, {', '.join(layer)} FROM {'numbered' if n == 0 else f'money{n - 1}'}"  # noqa: S608
        for n, layer in enumerate(layers))
    # Only generated column names (c0, c1, ...) and code constants are spliced in; every value from the profile
    # or the file is a bound parameter.
    sql = f"""
    CREATE OR REPLACE TEMP TABLE _csv_typed AS
    WITH kept AS (
        SELECT {', '.join(every)}, {spaced} AS spaced
        FROM {_READ_CSV}
        WHERE {kept} {''.join(f' AND NOT coalesce({s}, false)' for s in skips)}
    ), rows AS (
        SELECT {', '.join(every)},
               {f['own_account']} AS account_text, {f['booking_date']} AS booking_text,
               {f['value_date']} AS value_text, {f['amount']} AS amount_text, {f['debit']} AS debit_text,
               {f['credit']} AS credit_text, {f['direction']} AS direction_text, {f['currency']} AS currency_text,
               {f['counterparty_name']} AS name_text, {f['counterparty_name_when_debit']} AS name_debit_text,
               {f['counterparty_account']} AS cp_account_text,
               {f['counterparty_account_when_debit']} AS cp_account_debit_text,
               {f['counterparty_tax_id']} AS tax_text, {f['counterparty_bic']} AS bic_text,
               {f['purpose']} AS purpose_text, {f['bank_reference']} AS ref_text, {f['end_to_end_id']} AS e2e_text,
               {f['status']} AS status_text
        FROM kept
    ), numbered AS (  -- a streaming window: the input is read_csv's single ordered stream, no sort
        SELECT row_number() OVER ()::INTEGER AS record_number, * FROM rows
    {money_layers}
    ), typed AS (  -- every typed value computed once
        SELECT *, {amount} AS amount_value, {amount_reason} AS amount_reason, {booking} AS booking_value,
               {value_date} AS value_date_value, {account} AS account_value, {currency} AS currency_value,
               {status} AS status_value
        FROM money{len(layers) - 1}
    )
    SELECT record_number, coalesce(amount_reason, {date_reason},
                    CASE WHEN coalesce(account_value, '') = '' OR coalesce(currency_value, '') = ''
                         THEN 'own account or currency is empty' END,
                    {status_reason}) AS reason,
           account_value AS own_account, booking_value AS booking_date, value_date_value AS value_date,
           amount_value AS amount, currency_value AS currency,
           CASE WHEN amount_value < 0 AND {'true' if 'counterparty_name_when_debit' in profile.columns else 'false'}
                THEN name_debit_text ELSE name_text END AS counterparty_name,
           tax_text AS counterparty_tax_id,
           nullif(replace(CASE WHEN amount_value < 0 AND {'true' if 'counterparty_account_when_debit' in profile.columns else 'false'}
                THEN cp_account_debit_text ELSE cp_account_text END, ' ', ''), '') AS counterparty_account,
           bic_text AS counterparty_bic, purpose_text AS purpose, ref_text AS bank_reference,
           e2e_text AS end_to_end_id, coalesce(status_value, 'BOOK') AS status,
           CASE WHEN reason IS NOT NULL THEN concat_ws($delim, {', '.join(f"coalesce({c}, '')" for c in every)})
           END AS raw_record
    FROM typed
    """  # noqa: S608
    try:
        con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})
    except (duckdb.InvalidInputException, duckdb.IOException) as exc:
        first = str(exc).splitlines()[0].removeprefix("Error: ").strip()
        if not (isinstance(exc, duckdb.IOException) or "CSV" in first):
            raise  # not read_csv's (e.g. a profile's bad date format): no "the file is broken" message
        raise ParseError(f"the CSV cannot be read as a {profile.name} export ({first}); check that "
                         "the file is complete and unedited", path=name) from None
