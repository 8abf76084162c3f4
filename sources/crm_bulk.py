"""The fast path for CRM CSV dumps: DuckDB reads the rows and maps them onto the canonical CRM tables.

``crm.read`` stays the reference implementation (a parity test runs both on every fixture and on generated
awkward files). The header, encoding, delimiter and preset are found by the reference code itself, so a file
that looks like a preset but lacks a required column fails with the same error. Then:

- the rows are read by DuckDB ``read_csv`` (every field as text, single-threaded so quoted line breaks work)
  on a private in-memory connection, so a file DuckDB refuses leaves the caller's transaction untouched;
- one SQL statement cleans the values as ``sources.base.clean`` does (Python's whitespace set), applies the
  preset (columns, aliases, maps, defaults, constants), numbers the records, builds ``extra`` and the
  quarantine's raw JSON exactly as ``json.dumps(..., ensure_ascii=False)`` writes them, and names the reason
  of every rejected row (required fields empty);
- preset transforms (ms to minutes, Unix timestamps, dates, first id of a list, ...) run the reference's own
  Python functions once per distinct value, joined back in SQL; their errors quarantine rows as in ``crm.read``;
- accepted rows go to ``raw.crm_<entity>``, the rest to ``ops.quarantine``, streamed as Arrow batches.

What it does not reproduce falls back to ``crm.read`` for the whole file (same rows, same errors): JSON, NDJSON
and XLSX dumps, rows whose field count differs from the header's (their quarantine rows carry source line
numbers), and CSV that DuckDB and Python's csv module would split differently or that Python refuses
(NUL bytes, spaces between a delimiter and a quote, a value with an odd number of quotes or a file ending
inside an open quote, fields over ``csv.field_size_limit()``, a header line with line breaks or odd quoting,
bytes that are not valid in the detected encoding, anything DuckDB cannot read). The fallback decision is
made before anything is written, so the caller's transaction only ever sees one of the two paths.

Values from the file or a preset are bound parameters; column names are generated (``c0``, ``c1``, ...) or
canonical names from ``crm.ENTITIES``, quoted.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from sources import crm, text
from sources.base import BulkResult, clean
from sources.columnar import SQL_NOT_SPACE, sql_clean, sql_literal, sql_may_need_clean
from warehouse.db import quote_ident
from warehouse.load import RecordWriter

_CHUNK = 1 << 20
_BATCH_ROWS = 100_000
_MAX_SPACE_RUN = 1 << 20  # longer runs of spaces at a chunk border: the reference reads the file
_JSON_SPECIAL = '[\\x{1}-\\x{1f}"\\\\]'  # what json.dumps(ensure_ascii=False) escapes (NUL never gets here)
_JSON_SHORT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_NEVER = "\x00"  # DuckDB's null string: files holding NUL go to the reference, so every field is text, never NULL


class _Fallback(Exception):  # noqa: N818 - control flow, never escapes this module
    """The file is one the fast path does not reproduce exactly: the reference reader loads it."""


def _json_string(expr: str) -> str:
    """``json.dumps(expr, ensure_ascii=False)`` for a non-NULL text."""
    escaped = f"replace({expr}, '\\', '\\\\')"
    for char, code in _JSON_SHORT.items():
        if char != "\\":
            escaped = f"replace({escaped}, chr({ord(char)}), {sql_literal(code)})"
    for n in range(1, 32):
        if chr(n) not in _JSON_SHORT:
            escaped = f"replace({escaped}, chr({n}), {sql_literal(f'{chr(92)}u{n:04x}')})"
    return (f"('\"' || CASE WHEN regexp_matches({expr}, {sql_literal(_JSON_SPECIAL)}) THEN {escaped} ELSE {expr} END "
            "|| '\"')")


class _Params:
    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def __call__(self, value: object) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"


# ---- reading -----------------------------------------------------------------------------------------------

_PAIR_RISK = (" \"", "\" ")


def _scan(chunks, delimiter: str) -> int:
    """Refuse text where DuckDB and Python's csv would differ (NUL, spaces between a delimiter and a quote);
    returns the number of quote characters."""
    tail = ""
    quotes = 0
    risky = re.compile(f'(?:^|[{re.escape(delimiter)}\\r\\n]) +"|" +(?:[{re.escape(delimiter)}\\r\\n]|$)')
    for chunk in chunks:
        if "\x00" in chunk:
            raise _Fallback("NUL")
        count = chunk.count('"')
        quotes += count
        window = tail + chunk
        # a risky pair holds a quote: most chunks of a dump without quoting have none, and the two substring
        # searches cost more than reading the chunk (a 640 MB invoices dump: 1.4 of 2.3 s)
        if (count or '"' in tail) and any(p in window for p in _PAIR_RISK) and risky.search(window):
            raise _Fallback("space next to a quote")
        # keep a run of spaces at the end whole, with the character before it, for the next chunk's matches
        start = min(len(window) - 64, len(window.rstrip(" ")) - 1)
        if len(window) - start > _MAX_SPACE_RUN:
            raise _Fallback("a megabyte of spaces")
        tail = window[max(start, 0):]
    return quotes


def _readable(path: Path, head: bytes, found: crm.CsvHead, scratch: Path) -> tuple[Path, int, int]:
    """(UTF-8 file DuckDB reads, lines to skip, quote characters after the header).

    UTF-8 files are read in place (validated here: DuckDB's own check is not Python's codec) when the header
    line is one DuckDB skips exactly as the reference's ``readline`` does; other encodings are transcoded after
    the header line, as the reference reads them."""
    if found.encoding == "utf-8-sig":
        sample = head.decode("utf-8", errors="ignore").lstrip("\ufeff")
        line = re.match(r"[^\r\n]*", sample[:crm.MAX_LINE_CHARS]).group()
        simple = f'(?:"(?:[^"]|"")*"|[^"{re.escape(found.delimiter)}]*)'
        if (line != found.first or len(line) >= crm.MAX_LINE_CHARS - 2
                or not re.fullmatch(f"{simple}(?:{re.escape(found.delimiter)}{simple})*", line)):
            raise _Fallback("header line")
        decoder = codecs.getincrementaldecoder("utf-8")()

        def chunks():
            with path.open("rb") as fh:
                for data in iter(lambda: fh.read(_CHUNK), b""):
                    yield decoder.decode(data)
                yield decoder.decode(b"", final=True)

        try:
            quotes = _scan(chunks(), found.delimiter)
        except UnicodeDecodeError:
            raise _Fallback("not UTF-8") from None
        return path, 1, quotes - line.count('"')
    target = Path(tempfile.mkstemp(suffix=".csv", dir=scratch)[1])
    try:
        with path.open("rb") as raw, target.open("w", encoding="utf-8", newline="") as out:
            stream = io.TextIOWrapper(raw, encoding=found.encoding, errors="strict", newline="")
            stream.readline(crm.MAX_LINE_CHARS)

            def chunks():
                for data in iter(lambda: stream.read(_CHUNK), ""):
                    out.write(data)
                    yield data

            quotes = _scan(chunks(), found.delimiter)
    except (UnicodeDecodeError, _Fallback):
        target.unlink(missing_ok=True)
        raise _Fallback("encoding") from None
    return target, 0, quotes


# ---- mapping -----------------------------------------------------------------------------------------------

def _transform_table(mem: duckdb.DuckDBPyConnection, name: str, column: str, transform: str,
                     preset: crm.Preset) -> None:
    """The reference's transform over the distinct cleaned values of one column: (k, value, error)."""
    keys = [k for (k,) in mem.execute(f"SELECT DISTINCT {column} FROM _crm_rows WHERE {column} IS NOT NULL"  # noqa: S608 - generated names
                                      ).fetchall()]
    values, errors = [], []
    fn = crm.TRANSFORMS[transform]
    for key in keys:
        try:
            values.append(clean(fn(key)))
            errors.append(None)
        except (ValueError, OverflowError) as exc:
            values.append(None)
            errors.append(f"preset {preset.name}: {exc}")
    mem.register(f"{name}_arrow", pa.table({"k": pa.array(keys, pa.string()), "value": pa.array(values, pa.string()),
                                            "error": pa.array(errors, pa.string())}))
    mem.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")  # noqa: S608 - generated names
    mem.unregister(f"{name}_arrow")


def _map(mem: duckdb.DuckDBPyConnection, found: crm.CsvHead, preset: crm.Preset, p: _Params, quotes: int) -> str:
    """Build ``_crm_rows`` (record number, fields, cleaned mapped sources) and return the SQL of the output."""
    header = found.header
    last = {h: i for i, h in enumerate(header)}  # dict(zip(header, row)): the last column of a name wins
    width = len(header)
    every = [f"c{i}" for i in range(width + 1)]
    # a row is blank when no field has a non-whitespace character; most rows start with a printable ASCII one
    blank = f"NOT (left(coalesce(c0, ''), 1) BETWEEN '!' AND '~' OR regexp_matches(concat({', '.join(every)}), {sql_literal(SQL_NOT_SPACE)}))"
    wanted = crm.columns(preset.entity)
    required = crm.ENTITIES[preset.entity][0]
    sources: dict[str, str] = {}  # canonical -> generated column of its cleaned source
    for canonical in wanted:
        spec = preset.spec(canonical)
        source = crm._lookup(header, preset, spec.column) if spec else None
        if source:
            sources[canonical] = f"s{last[source]}"
    cleaned = sorted(set(sources.values()), key=lambda s: int(s[1:]))
    odd = " OR ".join(f"(contains({c}, '\"') AND (strlen({c}) - strlen(replace({c}, '\"', ''))) % 2 = 1)"
                      for c in every)
    (bad_rows, longest, odd_values, blanks), = mem.execute(
        f"SELECT count(*) FILTER (WHERE NOT ({blank}) AND (c{width - 1} IS NULL OR c{width} IS NOT NULL)), "  # noqa: S608 - generated names
        f"max(greatest({', '.join(f'strlen({c})' for c in every)})), count(*) FILTER (WHERE {odd}), "
        f"count(*) FILTER (WHERE {blank}) FROM _crm_text").fetchall()
    if bad_rows or (longest or 0) > csv.field_size_limit():
        raise _Fallback("field count or field size")
    # DuckDB drops a last record that ends inside an open quote (Python's csv keeps it). Read fields hold an
    # even number of quotes in the file whether quoted or not when every value has an even count, so an odd
    # count in the file means such a record; a value with an odd count (a bare quote) leaves it unknown.
    if odd_values or quotes % 2:
        raise _Fallback("open quote at the end or a bare quote")
    # record numbers count the non-blank rows; without blank rows they are the row ids (no window sort)
    numbering = "row_number() OVER (ORDER BY rowid)" if blanks else "rowid + 1"
    # one whitespace test per row (a memchr per character) spares most values the cleaning regexes
    spaced = sql_may_need_clean(f"concat({', '.join('c' + s[1:] for s in cleaned)})") if cleaned else "false"
    mem.execute(f"""
        CREATE TEMP VIEW _crm_rows AS
        SELECT record_number, {', '.join(f"c{i}" for i in range(width))}
               {''.join(f', {sql_clean("c" + s[1:], "spaced")} AS {s}' for s in cleaned)}
        FROM (SELECT ({numbering})::INTEGER AS record_number, *, {spaced} AS spaced
              FROM _crm_text {f"WHERE NOT ({blank})" if blanks else ""})""")  # noqa: S608 - generated names and code constants only
    joins, values, errors = [], {}, []
    for canonical in wanted:
        spec = preset.spec(canonical)
        if spec is None:
            constant = preset.constants.get(canonical)
            values[canonical] = "NULL::VARCHAR" if constant is None else f"{p(constant)}::VARCHAR"
            continue
        default = "NULL::VARCHAR" if spec.default is None else f"{p(spec.default)}::VARCHAR"
        source = sources.get(canonical)
        if source is None:
            values[canonical] = default
        elif spec.map is not None:
            hit = (f"({p(list(spec.map.values()))}::VARCHAR[])[list_position(({p(list(spec.map))}::VARCHAR[]), {source})]"
                   if spec.map else "NULL::VARCHAR")
            values[canonical] = f"CASE WHEN {source} IS NULL THEN {default} ELSE coalesce({hit}, {source}) END"
        elif spec.transform is not None:
            table = f"_crm_tf{len(joins)}"
            _transform_table(mem, table, source, spec.transform, preset)
            joins.append(f"LEFT JOIN {table} ON {table}.k = r.{source}")
            values[canonical] = f"CASE WHEN {source} IS NULL THEN {default} ELSE {table}.value END"
            errors.append(f"{table}.error AS _e{len(errors)}")
        else:
            values[canonical] = source if spec.default is None else f"coalesce({source}, {default})"
    empty = ", ".join(f"CASE WHEN coalesce({quote_ident(c)}, '') = '' THEN {sql_literal(c)} END" for c in required)
    reason = (f"coalesce({', '.join([*(f'_e{n}' for n in range(len(errors))), 'NULL::VARCHAR'])}, CASE WHEN {' OR '.join(f'coalesce({quote_ident(c)}, {chr(39) * 2}) = {chr(39) * 2}' for c in required)} "
              f"THEN 'required field(s) ' || concat_ws(', ', {empty}) || {p(f' empty (preset {preset.name})')} END)")
    # values / extra as the reference's dicts: names in first-occurrence order, the last column's value
    names = list(dict.fromkeys(header))
    pairs = {h: f"{p(json.dumps(h, ensure_ascii=False) + ': ')} || {_json_string(f'c{last[h]}')}" for h in names}
    raw_json = f"left('{{' || concat_ws(', ', {', '.join(pairs.values())}) || '}}', 2000)"
    mapped = crm.mapped_sources(header, preset)
    tag = preset.vendor != "canonical"
    preset_pair = p(f'"_preset": {json.dumps(preset.name, ensure_ascii=False)}')
    entries = []
    for h in names:
        if h in mapped:
            continue
        if tag and h == "_preset":  # {**extra, "_preset": name} keeps the key's place, replaces its value
            entries.append(preset_pair)
            tag = False
        else:
            entries.append(f"CASE WHEN c{last[h]} <> '' THEN {pairs[h]} END")
    if tag:
        entries.append(preset_pair)
    joined = f"concat_ws(', ', {', '.join(entries)})" if entries else "''"
    extra = f"CASE WHEN {joined} <> '' THEN '{{' || {joined} || '}}' END"
    columns_sql = ", ".join(f"{values[c]} AS {quote_ident(c)}" for c in wanted)
    return f"""
        WITH mapped AS (
            SELECT r.*, {columns_sql}, {', '.join(errors) + ',' if errors else ''} NULL AS _none
            FROM _crm_rows r {' '.join(joins)}
        ), judged AS (
            SELECT *, {reason} AS reason FROM mapped
        )
        SELECT record_number, {', '.join(quote_ident(c) for c in wanted)}, reason,
               CASE WHEN reason IS NULL THEN {extra} END AS extra,
               CASE WHEN reason IS NOT NULL THEN {raw_json} END AS raw_record
        FROM judged"""  # noqa: S608 - generated names and code constants only; values are parameters


def _fast(con, mem: duckdb.DuckDBPyConnection, path: Path, head: bytes, found: crm.CsvHead, preset: crm.Preset, *,
          file_hash: str, source_file: str, run_id: str, scratch: Path) -> tuple[int, int]:
    readable, skip, quotes = _readable(path, head, found, scratch)
    try:
        mem.execute("CREATE TEMP TABLE _crm_text AS SELECT * FROM read_csv($path, delim=$delim, quote='\"', "
                    "escape='\"', header=false, all_varchar=true, skip=$skip, null_padding=true, strict_mode=true, "
                    "auto_detect=false, columns=$columns, parallel=false, nullstr=$never)",
                    {"path": str(readable), "delim": found.delimiter, "skip": skip, "never": [_NEVER],
                     "columns": {f"c{i}": "VARCHAR" for i in range(len(found.header) + 1)}})
    except duckdb.Error:
        raise _Fallback("DuckDB cannot read it") from None
    finally:
        if readable != path:
            readable.unlink(missing_ok=True)
    p = _Params()
    sql = _map(mem, found, preset, p, quotes)
    used = set(re.findall(r"\$(p\d+)\b", sql))
    mem.execute(f"CREATE TEMP TABLE _crm_out AS {sql}", {k: v for k, v in p.values.items() if k in used})
    wanted = crm.columns(preset.entity)
    origin = {"file_hash": file_hash, "source_file": source_file}
    rows = mem.sql(f"SELECT record_number, {', '.join(quote_ident(c) for c in wanted)}, extra FROM _crm_out "  # noqa: S608 - generated names
                       "WHERE reason IS NULL ORDER BY record_number").to_arrow_reader(_BATCH_ROWS)
    con.register("_crm_batch", rows)
    try:
        con.execute(f"INSERT INTO raw.{quote_ident('crm_' + preset.entity)} BY NAME "  # noqa: S608 - entity is from crm.ENTITIES
                    "SELECT $file_hash AS file_hash, $source_file AS source_file, * FROM _crm_batch", origin)
    finally:
        con.unregister("_crm_batch")
    rejected = mem.sql("SELECT record_number, reason, raw_record FROM _crm_out WHERE reason IS NOT NULL "
                           "ORDER BY record_number").to_arrow_reader(_BATCH_ROWS)
    con.register("_crm_batch", rejected)
    try:
        con.execute("INSERT INTO ops.quarantine BY NAME SELECT $file_hash AS file_hash, $source_file AS source_file, "
                    "record_number, NULL::INTEGER AS source_line, reason, raw_record, $run_id AS run_id "
                    "FROM _crm_batch", {**origin, "run_id": run_id})
    finally:
        con.unregister("_crm_batch")
    (loaded, quarantined), = mem.execute("SELECT count(*) FILTER (WHERE reason IS NULL), "
                                         "count(*) FILTER (WHERE reason IS NOT NULL) FROM _crm_out").fetchall()
    return loaded, quarantined


def _settings(con) -> dict[str, object]:
    (threads, memory), = con.execute("SELECT current_setting('threads'), current_setting('memory_limit')").fetchall()
    return {"threads": int(threads), "memory_limit": str(memory)}


def load(con, path: Path, *, file_hash: str, source_file: str, run_id: str, scratch: Path,
         user_presets: tuple[crm.Preset, ...] = ()) -> BulkResult:
    """Load one CRM dump; the caller owns the transaction."""
    with path.open("rb") as fh:
        head = fh.read(text.SAMPLE_BYTES)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    is_csv = not (head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")) or stripped[:1] in (b"[", b"{"))
    if is_csv:
        found = crm.csv_head(path, head)  # the reference's encoding, delimiter and header (and its errors)
        preset = crm.choose_preset(found.header, crm.ranked_presets(user_presets), str(path))
        mem = duckdb.connect(config={**_settings(con), "temp_directory": str(scratch)})
        try:
            loaded, quarantined = _fast(con, mem, path, head, found, preset, file_hash=file_hash,
                                        source_file=source_file, run_id=run_id, scratch=scratch)
            return BulkResult(loaded, quarantined, "utf-8" if found.encoding == "utf-8-sig" else found.encoding)
        except _Fallback:
            pass
        finally:
            mem.close()
    writer = RecordWriter(con, file_hash=file_hash, source_file=source_file, reader=crm.NAME, run_id=run_id)
    for record in crm.read(path, user_presets=user_presets):
        writer.add(record)
    writer.flush()
    return BulkResult(writer.rows_raw, writer.rows_quarantined, writer.encoding)

