"""The fast path for MT940/MT942 files: polars and numpy do the per-line work, Python only decodes.

Same results as ``mt940.read`` (the reference implementation, parsing each message with the ``mt-940``
library); a parity test runs both on every fixture and on generated awkward files. The file is decoded
strictly with the encoding ``text.detect`` picks (as the reader does), re-encoded as UTF-8 (ASCII blocks of
a UTF-8 file pass as they are) and cut into chunks that end before a ``:20:`` line, so a chunk always holds
whole messages. numpy finds the line breaks and every line, with its terminator, becomes an Arrow string view
over the chunk (no Python object per line). The lines are numbered into messages exactly as
``mt940._messages`` does it (SWIFT block wrappers dropped, a message from each ``:20:``, same first line),
then seen as the library sees them (right-stripped, blank lines dropped): each line is a tag or a
continuation of the tag before it, and each message a sequence of one-letter codes. Tests that only need a
line's first bytes (wrappers, skipped lines, ``:20:``, the tag) read them from the 16-byte string views with
numpy (``columnar.string_heads``, ``_Heads``, ``_line_tags``) instead of a polars pass each.

A message is *plain* when its codes read ``:20: :25: [:28C:] opening (:61: [1 line] [:86: [lines]])* closing
[:64:/:65:]*`` (checked as allowed neighbour pairs with numpy) and every field matches a strict pattern whose
meaning in the library is unambiguous: ``:61:`` with an uppercase mark, ASCII amount, a ``[A-Z][A-Z0-9]{3}``
type code, a customer reference without ``/`` (``str.extract_groups`` with one regex), valid dates (the entry
date's year corrected as the library does across a year end), balances ``[DC]YYMMDDCCCamount``; ``:86:`` in the
German ``?20..?33`` style with the used sub-fields in ascending order (the text split once at ``?``, the codes
read from the pieces' views: ``_subfields``), at most one ``SVWZ+``/``EREF+`` and no ``KREF+``, the Dutch
``/KEY/value`` style without ``/CNTP/``, or free text. Plain messages are turned into rows with vectorised
expressions that follow ``processors.transaction_details_post_processor`` and ``mt940._split_dutch`` /
``mt940._counterparty`` (the INN of free text is found by ``mt940._INN`` on the few rows that contain one); a
message's values reach its entries by position, not by joins. Money stays text until it is cast exactly to
``Decimal(23, 5)`` (polars' decimal parse of the checked amount text), which DuckDB stores as it is and the
statement balance adds up per message. Every other message (MT942 tags, ``:86:`` before the first entry,
lowercase marks, odd references, bad amounts or dates, ...) is turned into records by the reference code
itself (``mt940.message_records``), record numbers continuing across messages like the reader's counter.
File-level problems (bytes the encoding cannot decode, over-long lines) are left to the reference reader,
which raises its own error for them.

Where the time goes (``bench/parsers.py --records 300000``, one thread, cProfile on a shared 2-core machine,
~1.45-1.6 s in all): about 0.07 s reading the chunks, 0.3 s the lines (views, right-strip, tags, message
structure), 0.32 s the ``:86:`` texts (0.17 s of it the German sub-field split, 0.07 s the whitespace cleaning
of five columns), 0.23 s the ``:61:`` regex, dates and amounts, 0.24 s building the rows and DuckDB's INSERT,
and 0.32 s DuckDB's COMMIT (writing and compressing the rows, outside this module): about two dozen polars
passes over the lines or the ``:61:``/``:86:`` values per chunk, and DuckDB's insert and commit a third of it.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from mt940.processors import GVC_KEYS

from sources import mt940, text
from sources.columnar import (
    NEEDS_FOLD,
    PY_SPACE,
    SPACE,
    folded,
    line_ends,
    read_chunk,
    string_heads,
    transcode,
    where,
)
from warehouse.load import BulkState

CHUNK_BYTES = 8 << 20

# Line codes: what a line is in a plain message
_A, _B, _S, _O, _T, _D, _E, _V, _U, _C, _X = range(1, 12)  # :20: :25: :28C: open :61: :86: close :64: +:61: +:86: odd
_TAGS = {"20": _A, "25": _B, "28": _S, "28C": _S, "60": _O, "60F": _O, "60M": _O, "61": _T, "86": _D,
         "62": _E, "62F": _E, "62M": _E, "64": _V, "65": _V}
_NEXT = {_A: (_B,), _B: (_S, _O), _S: (_O,), _O: (_T, _E), _T: (_U, _D, _T, _E), _U: (_D, _T, _E),
         _D: (_C, _T, _E), _C: (_C, _T, _E), _E: (_V,), _V: (_V,)}
_TAG_CODES = np.full((100, 128), _X, np.uint8)  # [NN, letter or 0] of a tag -> its line code
for _tag, _code in _TAGS.items():
    _TAG_CODES[int(_tag[:2]), ord(_tag[2:]) if _tag[2:] else 0] = _code
_ALLOWED = np.zeros((16, 16), bool)
for _before, _afters in _NEXT.items():
    _ALLOWED[_before, list(_afters)] = True
_ENDS = np.zeros(16, bool)
_ENDS[[_E, _V]] = True

_TAG = r"^:([0-9]{2}[A-Z]?):"  # the library's tag pattern for a line that starts with one
_PLAIN_AMOUNT = r"^[0-9]+(,[0-9]{0,5})?$"
_BALANCE = r"^(?P<mark>[DC])(?P<date>[0-9]{6})(?P<currency>[A-Z]{3})(?P<amount>[0-9,]{1,16})$"
_STATEMENT = (r"^(?P<date>[0-9]{6})(?P<entry>[0-9]{4})?(?P<mark>R?[DC])[A-Z]?(?P<amount>[0-9,]{1,15})"
              r"[A-Z][A-Z0-9]{3}(?P<customer>[ -.0-~]{0,16})(?://(?P<bank>[^\n]{0,23}))?(?:\n[^\n]*)?$")
# the lines mt940._messages skips, with any terminator
_SKIPPED = [line + end for line in ("-}", "-", "}", "") for end in ("", "\n", "\r\n", "\r")]
_LINE_BREAKS = "[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00\x01]"  # str.splitlines() breaks, and our sentinels
# German ?xx sub-fields the reader uses (a plain text has each at most once, in this order; see _subfields)
_USED_FIELDS = ("00", *(str(n) for n in range(20, 34)))
_GVC = "|".join(re.escape(k) for k in GVC_KEYS if k)
_UNCLEAN = f"^{SPACE}|{SPACE}$|{NEEDS_FOLD}"
_DUTCH_FIELDS = ("NAME", "IBAN", "BIC", "REMI", "EREF")


class _Unusual(Exception):
    """A file-level problem: the reference reader raises the file's error for it."""


@dataclass
class _State(BulkState):
    accounts: dict[str, str] | None = None  # :25: -> own account (mt940._own_account)


def load(con: duckdb.DuckDBPyConnection, path: Path, *, file_hash: str, source_file: str,
         run_id: str) -> tuple[int, int, str]:
    """Load one MT940 file; returns (rows loaded, rows quarantined, encoding). The caller owns the transaction."""
    name = str(path)
    with path.open("rb") as fh:
        encoding = text.detect(fh.read(text.SAMPLE_BYTES), name)
    st = _State.start(con, path, file_hash=file_hash, source_file=source_file, run_id=run_id, reader=mt940.NAME,
                      accounts={})
    writer = st.writer
    try:
        for chunk in _chunks(path, encoding):
            _process(st, chunk)
    except _Unusual:
        for _ in mt940.read(path):  # raises the reader's ParseError for this file
            pass
        raise AssertionError(f"{name}: the MT940 reader accepted what its fast path refused") from None
    writer.flush()
    return st.loaded + writer.rows_raw, writer.rows_quarantined, "utf-8" if encoding == "utf-8-sig" else encoding


def _chunks(path: Path, encoding: str):
    """UTF-8 bytes of whole messages: each chunk but the last ends before a line starting with ':20:'. Each
    chunk is a fresh ``bytearray`` the file is read into; plain ASCII stays as it is (only the part after the cut
    is copied to the next chunk), anything else is decoded and re-encoded as UTF-8 blockwise
    (``columnar.transcode``)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    pending = b""
    with path.open("rb") as fh:
        while True:
            data, size = read_chunk(fh, pending, CHUNK_BYTES)
            at_end = size == len(pending)
            if utf8 and data.isascii() and not decoder.getstate()[0]:  # no partial character pending
                decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")  # a BOM counts only first
            else:
                try:
                    with memoryview(data) as view:
                        data = transcode(pending, view[len(pending):], decoder, final=at_end)
                except UnicodeDecodeError:
                    raise _Unusual from None
            if at_end:
                yield data
                return
            cut = data.rfind(b"\n:20:")
            cut = max(cut, data.rfind(b"\r:20:", max(cut, 0))) + 1  # CR-only files; CRLF: no full scan
            pending = bytes(data[cut:]) if cut > 0 else bytes(data)
            if cut > 0:
                del data[cut:]
                yield data


def _strings(buf: bytes, offsets: np.ndarray) -> pl.Series:
    """Arrow string views over buf, one per consecutive offset pair."""
    return pl.from_arrow(pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets),
                                                          pa.py_buffer(buf)))


class _Heads:
    """The first four bytes of each string (no NULLs) as one little-endian word, the bytes past its length
    zeroed, and its byte length, from ``string_heads``: prefix and equality tests against texts of at most
    four bytes in numpy, without a polars pass each."""

    _MASKS = np.array([0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF], np.uint32)

    def __init__(self, values: pl.Series):
        self.length, head = string_heads(values)
        self.word = np.ascontiguousarray(head).view("<u4").ravel() & self._MASKS[np.minimum(self.length, 4)]

    @staticmethod
    def _word(text: str) -> tuple[int, int]:
        data = text.encode()
        assert len(data) <= 4, text  # the texts are constants of this module
        return int.from_bytes(data, "little"), len(data)

    def starts(self, prefix: str) -> np.ndarray:
        word, size = self._word(prefix)
        return (self.length >= size) & ((self.word & self._MASKS[size]) == word)

    def equals(self, text: str) -> np.ndarray:
        word, size = self._word(text)
        return (self.length == size) & (self.word == word)


def _process(st: _State, buf: bytes) -> None:
    if not buf:
        return
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = line_ends(arr, buf)
    starts = np.concatenate((np.zeros(1, np.int64), ends[:-1]))
    n = len(ends)
    for i in np.flatnonzero((ends - starts) > mt940.MAX_LINE_CHARS):  # bytes >= characters
        if len(buf[starts[i]:ends[i]].decode("utf-8")) > mt940.MAX_LINE_CHARS:
            raise _Unusual
    # the lines with their terminators (no line holds a \r or \n otherwise): the terminators go with the
    # right-strip below, the tests for skipped lines allow for them, and _message_texts drops them
    raw = _strings(buf, np.concatenate((np.zeros(1, np.int64), ends)))
    st_base = st.line_base
    st.line_base += n

    # mt940._messages: block wrappers, skipped lines, a message from each :20:
    head = _Heads(raw)
    wrapped = head.starts("{1:") | head.starts("{2:")
    if wrapped.any():
        raw = where(raw, pl.Series(wrapped),
                    lambda v: v.str.splitn("{4:", 2).struct.field("field_1").fill_null(""))
        head = _Heads(raw)
    skipped = head.starts("{5:")
    for line in _SKIPPED:
        skipped |= head.equals(line)
    maybe = np.flatnonzero(head.starts("-}{5"))
    if len(maybe):
        skipped[maybe] |= raw.gather(maybe).str.starts_with("-}{5:").to_numpy()
    kept = np.flatnonzero(~skipped)  # the message lines (not gathered: positions are enough)
    if not len(kept):
        return
    first20 = head.starts(":20:")[kept]
    opens = np.diff(np.cumsum(first20), prepend=-1) != 0
    msg = np.cumsum(opens) - 1  # message of each kept line, 0..m-1
    first = np.flatnonzero(opens)
    m = len(first)
    start_line = kept[first] + st_base + 1

    # the library's view: lines right-stripped, blank ones dropped; tags and continuation lines
    # (the seen lines are rows; their texts stay in seen_all and are gathered only where values are needed)
    seen_all = raw.str.strip_chars_end(PY_SPACE)
    rows = np.flatnonzero((seen_all != "").to_numpy()[kept])  # among the kept lines
    at = kept[rows]  # each row's line in seen_all
    row_msg = msg[rows]
    code, short, tagged, odd_line = (a[at] for a in _line_tags(seen_all))
    continuation = ~tagged
    dash = np.flatnonzero(seen_all.str.ends_with("-").to_numpy()[at])  # a '-' line, maybe indented
    odd_line[dash] |= (seen_all.gather(at[dash]).str.strip_chars_start(PY_SPACE) == "-").to_numpy()
    code[continuation & odd_line] = _X
    position = np.arange(len(rows))
    owner = np.maximum.accumulate(np.where(~continuation, position, -1))
    owned = continuation & ~odd_line
    owner_code = np.where(owner >= 0, code[np.maximum(owner, 0)], _X)
    owner_code[(owner >= 0) & (row_msg[np.maximum(owner, 0)] != row_msg)] = _X
    code[owned] = np.select([owner_code[owned] == _T, owner_code[owned] == _D], [_U, _C], _X)

    # structure: allowed neighbours, the first a :20:, the last a closing balance or :64:/:65:
    bad = np.zeros(m, bool)
    same = row_msg[1:] == row_msg[:-1]
    bad[row_msg[1:][same & ~_ALLOWED[code[:-1], code[1:]]]] = True
    present = np.zeros(m, bool)
    present[row_msg] = True
    bad |= ~present
    if len(rows):
        heads = np.flatnonzero(np.diff(row_msg, prepend=-1) != 0)
        tails = np.append(heads[1:] - 1, len(rows) - 1)
        bad[row_msg[heads[code[heads] != _A]]] = True
        bad[row_msg[tails[~_ENDS[code[tails]]]]] = True

    def lines(picked: np.ndarray) -> pl.Series:  # the seen lines of some rows
        return seen_all.gather(at[picked])

    def values(picked: np.ndarray) -> pl.Series:  # their values: after ':61:' etc., four characters in or five
        text, other = lines(picked), pl.Series(~short[picked])
        offset = pl.Series(np.where(tagged[picked], 5, 0)[~short[picked]])
        return where(text.str.slice(4), other, lambda _: text.filter(other).str.slice(offset))

    fields = _fields(row_msg, code, lines, values)
    bad[fields["bad_msgs"]] = True

    plain_msgs = np.flatnonzero(~bad)
    odd_msgs = np.flatnonzero(bad)
    counts = np.zeros(m, np.int64)
    entries: pl.DataFrame = fields["entries"]
    if entries.height:
        counts += np.bincount(entries["msg"].to_numpy(), minlength=m) * ~bad
    odd_records = {}
    if len(odd_msgs):
        texts = _message_texts(raw, kept, msg, odd_msgs)
        for k in odd_msgs.tolist():
            records = mt940.message_records(texts[k], int(start_line[k]), 0, st.name)
            odd_records[k] = records
            counts[k] = mt940.records_used(records, 0)
    before = st.record + np.cumsum(counts) - counts
    st.record += int(counts.sum())
    for k, records in odd_records.items():
        for rec in records:
            rec.record_number += int(before[k])
            st.writer.add(rec)
    if len(plain_msgs):
        _insert(st, fields, plain_msgs, before, start_line)


def _line_tags(seen: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``_TAG`` read from the first bytes of each line (``string_heads``): ``:NN:``, or ``:NNA`` and a fifth
    byte ``:`` (looked up on those few lines). Returns the line codes (``_X`` for other tags and untagged
    lines), which lines have a two-character tag, which have a tag, and which start with ``:``."""
    length, head = string_heads(seen)
    zero = np.uint8(ord("0"))  # bytes below '0' wrap round to > 9
    digits = (head[:, 1] - zero <= 9) & (head[:, 2] - zero <= 9)
    colon = (length > 0) & (head[:, 0] == ord(":"))
    short = colon & digits & (length >= 4) & (head[:, 3] == ord(":"))
    letter = (head[:, 3] >= ord("A")) & (head[:, 3] <= ord("Z"))
    long = np.flatnonzero(colon & digits & (length >= 5) & letter)
    long = long[(seen.gather(long).str.slice(4, 1) == ":").to_numpy()]
    number = head[:, 1].astype(np.int16) * 10 + head[:, 2] - 11 * ord("0")
    code = np.full(len(seen), _X, np.uint8)
    code[short] = _TAG_CODES[number[short], 0]
    code[long] = _TAG_CODES[number[long], head[long, 3]]
    tagged = short.copy()
    tagged[long] = True
    return code, short, tagged, colon


def _message_texts(raw: pl.Series, kept: np.ndarray, msg: np.ndarray, wanted: np.ndarray) -> dict[int, str]:
    """The text ``mt940._messages`` gives the library for some messages."""
    at = np.flatnonzero(np.isin(msg, wanted))
    out: dict[int, list[str]] = {}
    lines = raw.gather(kept[at]).str.strip_suffix("\n").str.strip_suffix("\r")  # '\r\n', '\n' or '\r'
    for k, line in zip(msg[at].tolist(), lines.to_list(), strict=True):
        out.setdefault(k, []).append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def _clean(values: pl.Series) -> pl.Series:
    """base.clean: whitespace runs folded to one space, stripped; empty -> NULL (only rows that need it)."""
    values = where(values, values.str.contains(_UNCLEAN), lambda v: folded(v.str.strip_chars(PY_SPACE)))
    empty = values == ""
    return values.set(empty, None) if empty.any() else values


def _date(yymmdd: pl.Expr) -> pl.Expr:
    """models.Date of a YYMMDD text (two-digit years are 20YY); NULL when it is no date."""
    return pl.concat_str(pl.lit("20"), yymmdd).str.strptime(pl.Date, "%Y%m%d", strict=False)


def _fields(row_msg: np.ndarray, code: np.ndarray, lines: Callable[[np.ndarray], pl.Series],
            values: Callable[[np.ndarray], pl.Series]) -> dict:
    """Entries and balances of the messages with their values checked (``lines``/``values``: the text of some
    rows, whole or after the tag); ``bad_msgs``: messages outside the plain subset."""
    bad_parts = []
    s_rows = np.flatnonzero(np.isin(code, [_A, _B, _S, _O, _E, _V]))
    ends = np.flatnonzero(np.isin(code[s_rows], [_O, _E]))  # their tag text is used: 60F/60M, 62F/62M
    tag = pl.repeat(None, len(s_rows), dtype=pl.String, eager=True).scatter(
        ends, lines(s_rows[ends]).str.slice(1, 3).str.strip_suffix(":"))
    single = pl.DataFrame({"msg": row_msg[s_rows], "code": code[s_rows], "tag": tag, "value": values(s_rows)})
    checks = single.with_columns(ok=pl.when(pl.col("code") == _A).then(pl.col("value").str.contains(r"^[!-~]{1,16}$"))
                                 .when(pl.col("code") == _B).then(pl.col("value").str.contains(r"^[A-Za-z0-9/]{1,35}$"))
                                 .when(pl.col("code") == _S).then(pl.col("value").str.contains(
                                     r"^[0-9]{1,5}(/?[0-9]{1,5})?$"))
                                 .otherwise(True))
    balances = checks.filter(pl.col("code").is_in([_O, _E, _V])).with_columns(
        parts=pl.col("value").str.extract_groups(_BALANCE)).unnest("parts").with_columns(
        day=_date(pl.col("date")),
        amount_text=pl.when(pl.col("amount").str.contains(_PLAIN_AMOUNT)).then(
            pl.concat_str(pl.when(pl.col("mark") == "D").then(pl.lit("-")).otherwise(pl.lit("")),
                          pl.col("amount").str.replace(",", ".", literal=True))))
    balances = balances.with_columns(ok=pl.col("day").is_not_null() & pl.col("amount_text").is_not_null())
    bad_parts += [checks.filter(~pl.col("ok").fill_null(False))["msg"],
                  balances.filter(~pl.col("ok").fill_null(False))["msg"]]

    # :61: with its continuation line, and the :86: after it
    t_rows = np.flatnonzero(code == _T)
    follows = np.minimum(t_rows + 1, len(code) - 1)
    with_line = (t_rows + 1 < len(code)) & (code[follows] == _U)
    statement = values(t_rows)
    statement = where(statement, pl.Series(with_line), lambda v: v + "\n" + lines(t_rows[with_line] + 1))
    d_rows = np.flatnonzero(code == _D)
    entry_of_d = np.searchsorted(t_rows, d_rows, side="right") - 1  # the :61: before each :86:
    details = values(d_rows)
    c_rows = np.flatnonzero(code == _C)
    if len(c_rows):  # multi-line :86:
        owner = np.searchsorted(d_rows, c_rows, side="right") - 1
        joined = (pl.DataFrame({"d": np.concatenate((np.arange(len(d_rows)), owner)),
                                "order": np.concatenate((d_rows, c_rows)),
                                "text": pl.concat([details, lines(c_rows)])})
                  .filter(pl.col("d").is_in(np.unique(owner))).sort("d", "order")
                  .group_by("d", maintain_order=True).agg(pl.col("text").str.join("\n")))
        details = details.scatter(joined["d"].to_numpy(), joined["text"])
    length, head = string_heads(details)  # stripped only where the first byte may start some whitespace
    details = where(details, pl.Series((length > 0) & ((head[:, 0] <= ord(" ")) | (head[:, 0] >= 0x80))),
                    lambda v: v.str.strip_chars_start(PY_SPACE))
    party = _details(details)
    bad_parts.append(pl.Series(row_msg[d_rows]).filter(party["bad"]))
    right_after = (d_rows > 0) & np.isin(code[np.maximum(d_rows - 1, 0)], [_T, _U])  # else: not plain anyway
    party_of = np.full(len(t_rows), -1, np.int64)  # the :86: of each :61: (the last one: not plain anyway)
    party_of[entry_of_d[right_after]] = np.flatnonzero(right_after)
    party = party.drop("bad")
    if not np.array_equal(party_of, np.arange(len(d_rows))):
        missing = party_of < 0
        party = party.select(pl.all().gather(pl.Series(party_of).set(pl.Series(missing), None)))

    entries = pl.DataFrame({"msg": row_msg[t_rows], "value": statement}).with_columns(
        parts=pl.col("value").str.extract_groups(_STATEMENT)).unnest("parts").hstack(party)
    value_date = _date(pl.col("date"))
    entry_date = _date(pl.concat_str(pl.col("date").str.slice(0, 2), pl.col("entry")))
    entries = entries.with_columns(value_date=value_date, entry_date=entry_date)
    days = (pl.col("value_date") - pl.col("entry_date")).dt.total_days()
    shift = pl.when(days >= 330).then(1).when(days <= -330).then(-1).otherwise(0)
    entries = entries.with_columns(shift=shift)
    moved = entries["shift"] != 0
    if moved.any():  # the entry date's year across a year end, on the few rows that need it
        year = (pl.col("entry_date").dt.year() + pl.col("shift")).cast(pl.String).str.zfill(4)
        corrected = entries.filter(moved).select(
            pl.concat_str(year, pl.col("entry")).str.strptime(pl.Date, "%Y%m%d", strict=False)).to_series()
        entries = entries.with_columns(entry_date=where(entries["entry_date"], moved, lambda _: corrected))
    entries = entries.with_columns(
        ok=(pl.col("value_date").is_not_null() & (pl.col("entry").is_null() | pl.col("entry_date").is_not_null())
            & pl.col("amount").str.contains(_PLAIN_AMOUNT)).fill_null(False),
        booking_date=pl.coalesce("entry_date", "value_date"),
        amount_text=pl.concat_str(pl.when(pl.col("mark").is_in(["D", "RC"])).then(pl.lit("-"))  # RC: out again
                                  .otherwise(pl.lit("")), pl.col("amount").str.replace(",", ".", literal=True)),
        bank_reference=pl.when(pl.col("bank") != "").then(pl.col("bank")),  # the owner's reference repeats
        is_reversal=pl.col("mark").str.starts_with("R").fill_null(False))
    bad_parts.append(entries.filter(~pl.col("ok"))["msg"])
    bad_msgs = np.unique(pl.concat([p.cast(pl.Int64) for p in bad_parts]).to_numpy())
    return {"entries": entries, "single": single, "balances": balances, "bad_msgs": bad_msgs}


def _details(details: pl.Series) -> pl.DataFrame:
    """What ``mt940._counterparty`` makes of the ``:86:`` texts (joined lines, stripped), one row per text (``i``),
    and ``bad``: the texts outside the plain subset. Each style is worked out on its own rows only."""
    flat = where(details, details.str.contains("\n", literal=True),
                  lambda v: v.str.replace_all("\n", "", literal=True))  # the library's splitlines-join
    german = flat.str.contains(r"^[0-9]{3}\?[0-9]{2}").to_numpy()
    bad, dutch, inn = (np.zeros(len(details), bool) for _ in range(3))
    rest = np.flatnonzero(~german)  # these tests matter only for the texts not in the German style
    if len(rest):
        text, flat_text = details.gather(rest), flat.gather(rest)
        bad[rest] = (text.str.contains(_LINE_BREAKS) | flat_text.str.contains(r"^\d{3}\?\d{2}")).to_numpy()
        dutch[rest] = text.str.contains(mt940._DUTCH.pattern).to_numpy()
        inn[rest] = text.str.contains("ИНН", literal=True).to_numpy()
    other = np.flatnonzero(~german & ~dutch)
    parts = [pl.DataFrame({"i": other, "purpose": details.gather(other)}, schema_overrides={"i": pl.Int64})]
    if german.any():
        rows = np.flatnonzero(german)
        part, wrong = _german(flat.gather(rows))
        bad[rows[wrong]] = True
        parts.append(part.with_columns(i=pl.Series(rows, dtype=pl.Int64)))
    if dutch.any():
        rows = np.flatnonzero(dutch)
        part, wrong = _dutch(flat.gather(rows))
        bad[rows[wrong]] = True
        parts.append(part.with_columns(i=pl.Series(rows, dtype=pl.Int64)))
    party = pl.concat(parts, how="diagonal_relaxed")
    order = party["i"].to_numpy()
    if not (order[1:] > order[:-1]).all():  # one style only: in order already
        party = party.sort("i")
    inn_rows = np.flatnonzero(inn & ~dutch)
    tax = pl.repeat(None, len(details), dtype=pl.String, eager=True).alias("counterparty_tax_id")
    if len(inn_rows):  # mt940._INN itself, on the few texts that name one
        found = [mt940._INN.search(t) for t in details.gather(inn_rows).to_list()]
        tax = tax.scatter(inn_rows, pl.Series([f.group(1) if f else None for f in found], dtype=pl.String))
    nothing = pl.repeat(None, len(details), dtype=pl.String, eager=True)
    cleaned = {c: _clean(party[c]) if c in party.columns else nothing.alias(c)
               for c in ("counterparty_name", "counterparty_account", "counterparty_bic", "end_to_end_id",
                         "purpose", "posting_text")}
    purpose = cleaned.pop("purpose")
    posting = cleaned.pop("posting_text")
    purpose = where(purpose, purpose.is_null() & posting.is_not_null(), lambda _: posting.filter(
        purpose.is_null() & posting.is_not_null()))
    return pl.DataFrame({"bad": bad, **cleaned, "purpose": purpose, "counterparty_tax_id": tax})


def _field(texts: pl.Series, start: str, stop: str) -> pl.Series:
    """The text after the first ``start`` up to the next ``stop`` (NULL without ``start``), by literal splits."""
    return texts.str.splitn(start, 2).struct.field("field_1").str.splitn(stop, 2).struct.field("field_0")


def _subfields(flat: pl.Series) -> tuple[dict[str, pl.Series], np.ndarray]:
    """``_field(flat, "?c", "?")`` for each used sub-field code c that some text has, in one pass: the texts
    split at every ``?``, a piece's code its first two characters (the piece before the first ``?`` has none),
    the first piece of each code per text. And which texts are not of the plain German shape: three digits,
    then ``?``-pieces that each start with a two-digit code, the used codes (00, 20..33) at most once and in
    ascending order (the others, 01..19 and 34..99, anywhere). Codes are read from the string views
    (``string_heads``), so no piece is materialised for it."""
    parts = flat.str.split("?")
    counts = parts.list.len().to_numpy()
    pieces = parts.explode()
    text_of = np.repeat(np.arange(len(flat)), counts)
    length, head = string_heads(pieces)
    zero = np.uint8(ord("0"))  # bytes below '0' wrap round to > 9
    shaped = (length >= 2) & (head[:, 0] - zero <= 9) & (head[:, 1] - zero <= 9)
    number = np.where(shaped, head[:, 0].astype(np.int16) * 10 + head[:, 1] - 11 * ord("0"), -1)  # the code
    lead = np.cumsum(counts) - counts  # the piece before the first '?': three digits, no code
    shaped[lead] = (length[lead] == 3) & (head[lead, :3] - zero <= 9).all(1)
    number[lead] = -1
    wrong = np.zeros(len(flat), bool)
    wrong[text_of[~shaped]] = True
    used = np.flatnonzero((number == 0) | ((number >= 20) & (number <= 33)))  # 00, 20..33
    number = number[used]
    texts = text_of[used]
    same = texts[1:] == texts[:-1]
    wrong[texts[1:][same & (number[1:] <= number[:-1])]] = True
    out = {}
    for c in _USED_FIELDS:
        at = used[number == int(c)]
        if not len(at):
            continue
        texts = text_of[at]
        first = np.ones(len(at), bool)
        first[1:] = texts[1:] != texts[:-1]  # pieces are in text order
        values = pieces.gather(at[first]).str.slice(2)
        out[c] = values if first.sum() == len(flat) else pl.repeat(
            None, len(flat), dtype=pl.String, eager=True).scatter(texts[first], values)
    return out, wrong


def _german(flat: pl.Series) -> tuple[pl.DataFrame, np.ndarray]:
    """processors._parse_mt940_details (DETAIL_KEYS_APPLICANT_IBAN), then _parse_mt940_gvcodes, for texts in the
    German ?xx style; and which texts are outside the plain subset (sub-fields in another order, KREF, ...)."""
    sub, wrong = _subfields(flat)
    none = pl.repeat(None, len(flat), dtype=pl.String, eager=True)
    lines = [sub[c] if c == "20" else _unlabelled(sub[c]) for c in map(str, range(20, 30)) if c in sub]
    purpose = (pl.select(pl.concat_str(lines, ignore_nulls=True)).to_series() if len(lines) > 1
               else lines[0].fill_null("") if lines else none.fill_null(""))
    markers = purpose.str.count_matches(f"(?:{_GVC})\\+")  # GVC keyword + '+' never overlap
    e2e = none
    alone = (markers == 1) & purpose.str.starts_with("SVWZ+")  # the common case: the purpose is all there is
    purpose = where(purpose, alone, lambda v: v.str.slice(5))
    several = (markers > 0) & ~alone
    if several.any():  # keywords as sentinels (each '+' is one), then the first value after SVWZ / EREF
        split = purpose.filter(several).str.replace_all(f"({_GVC})\\+", "\x00${1}\x01")
        wrong[several.to_numpy()] |= ((split.str.count_matches("\x00SVWZ\x01", literal=True) > 1)
                                      | (split.str.count_matches("\x00EREF\x01", literal=True) > 1)
                                      | split.str.contains("\x00KREF\x01", literal=True)).to_numpy()
        e2e = where(none, several, lambda _: _field(split, "\x00EREF\x01", "\x00"))
        purpose = where(purpose, several, lambda _: _field(split, "\x00SVWZ\x01", "\x00"))
    names = [sub[c] for c in ("32", "33") if c in sub]
    return pl.DataFrame({
        "counterparty_name": pl.select(pl.concat_str(names, ignore_nulls=True)).to_series() if names else none,
        "counterparty_account": sub.get("31", none), "counterparty_bic": sub.get("30", none),
        "purpose": purpose.str.strip_suffix(" BIC"), "posting_text": sub.get("00", none), "end_to_end_id": e2e,
    }), wrong


def _dutch(flat: pl.Series) -> tuple[pl.DataFrame, np.ndarray]:
    """mt940._split_dutch: markers found as re.split finds them, the first value of each key; texts with /CNTP/
    are left to the reference code."""
    split = flat.str.replace_all(mt940._DUTCH.pattern, "\x00${1}\x01")
    wrong = split.str.contains("\x00CNTP\x01", literal=True).to_numpy()
    values = {k: _field(split, f"\x00{k}\x01", "\x00").str.strip_chars("/ ").str.strip_chars(PY_SPACE)
              for k in _DUTCH_FIELDS}
    return pl.DataFrame({"counterparty_name": values["NAME"], "counterparty_account": values["IBAN"],
                         "counterparty_bic": values["BIC"], "purpose": values["REMI"],
                         "end_to_end_id": values["EREF"]}), wrong


def _unlabelled(value: pl.Series) -> pl.Series:
    """A ?21..?29 purpose line without a dangling ' BIC' / ' IBAN' label (processors._process_segments)."""
    for label in (" BIC", " IBAN"):
        value = where(value, value.str.ends_with(label),
                       lambda v, label=label: v.str.strip_suffix(label).str.strip_chars_end(PY_SPACE))
    return value


_ENTRIES = """
    INSERT INTO raw.bank_transaction BY NAME
    SELECT $file_hash AS file_hash, $source_file AS source_file, record_number::INTEGER AS record_number,
           source_line::INTEGER AS source_line, $reader AS reader, own_account, booking_date, value_date,
           amount, currency, counterparty_name, counterparty_tax_id,
           counterparty_account, counterparty_bic, purpose, bank_reference, end_to_end_id, 'BOOK' AS status,
           is_reversal
    FROM _mt940_entries"""
_BALANCES = """
    INSERT INTO raw.statement_balance BY NAME
    SELECT $file_hash AS file_hash, $source_file AS source_file, record_number::INTEGER AS record_number,
           own_account, statement_id, balance_date, CAST(opening AS DECIMAL(23, 5)) AS opening,
           CAST(closing AS DECIMAL(23, 5)) AS closing, currency, coalesce(total, 0) AS entries_total
    FROM _mt940_balances"""
_ENTRY_COLUMNS = ("msg", "record_number", "source_line", "own_account", "booking_date", "value_date",
                  "amount", "currency", "counterparty_name", "counterparty_tax_id", "counterparty_account",
                  "counterparty_bic", "purpose", "bank_reference", "end_to_end_id", "is_reversal")


def _insert(st: _State, fields: dict, plain: np.ndarray, before: np.ndarray, start_line: np.ndarray) -> None:
    """The rows of the plain messages: entries typed by DuckDB, one balance per statement that has one. A
    plain message has one :20:, :25:, opening and closing line each, so those rows, in line order, line up
    with ``plain`` (no joins); entries find their message's values by its place in ``plain``."""
    is_plain = np.zeros(len(before), bool)
    is_plain[plain] = True

    def kept(frame: pl.DataFrame) -> pl.DataFrame:  # the rows of the plain messages
        if len(plain) == len(before):
            return frame
        return frame.filter(pl.Series(is_plain[frame["msg"].to_numpy()]))

    single = kept(fields["single"])
    balances = kept(fields["balances"])
    accounts = single.filter(pl.col("code") == _B)["value"]
    for value in accounts.unique().to_list():
        if value not in st.accounts:
            st.accounts[value] = mt940._own_account(value)[0]
    opening = balances.filter(pl.col("code") == _O)
    closing = balances.filter(pl.col("code") == _E)
    own_account = accounts.replace_strict(st.accounts, return_dtype=pl.String)

    entries = kept(fields["entries"])
    msg = entries["msg"].to_numpy()
    at = np.searchsorted(plain, msg)  # the message's place in plain
    rank = np.arange(len(msg)) - np.searchsorted(msg, msg)  # entries are in message order
    entries = entries.select(
        "msg", pl.Series("record_number", before[msg] + rank + 1), pl.Series("source_line", start_line[msg]),
        own_account.gather(at).alias("own_account"), "booking_date", "value_date",
        pl.col("amount_text").cast(pl.Decimal(23, 5)).alias("amount"),  # exact, as DuckDB's cast of it
        opening["currency"].gather(at).alias("currency"), *_ENTRY_COLUMNS[8:])
    used = (opening["tag"] != "60M") | (closing["tag"] != "62M")
    open_used, close_used = pl.col("open_tag") != "60M", pl.col("close_tag") != "62M"
    statement = pl.DataFrame({
        "msg": plain, "own_account": own_account,
        "statement_id": single.filter(pl.col("code") == _A)["value"],
        "record_number": before[plain] + np.bincount(msg, minlength=len(before))[plain],
        "open_tag": opening["tag"], "open_amount": opening["amount_text"], "open_day": opening["day"],
        "open_currency": opening["currency"], "close_tag": closing["tag"],
        "close_amount": closing["amount_text"],
        "close_day": closing["day"], "close_currency": closing["currency"],
    }).filter(used).select(
        "msg", "own_account", "statement_id", "record_number",
        balance_date=pl.when(close_used).then("close_day").otherwise("open_day"),
        opening=pl.when(open_used).then("open_amount"), closing=pl.when(close_used).then("close_amount"),
        currency=pl.when(close_used).then("close_currency").otherwise("open_currency"))
    totals = entries.group_by("msg").agg(total=pl.col("amount").sum())
    statement = statement.join(totals, on="msg", how="left")
    # large_string columns: DuckDB's scan of them measured a little cheaper than of string views
    st.con.register("_mt940_entries", entries.to_arrow(compat_level=pl.CompatLevel.oldest()))
    st.con.register("_mt940_balances", statement.to_arrow(compat_level=pl.CompatLevel.newest()))
    try:
        st.con.execute(_ENTRIES, st.params)
        st.con.execute(_BALANCES, {k: st.params[k] for k in ("file_hash", "source_file")})
    finally:
        st.con.unregister("_mt940_entries")
        st.con.unregister("_mt940_balances")
    st.loaded += entries.height
