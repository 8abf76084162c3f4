"""Vectorised helpers the set-based fast paths share (``*_bulk.py``): Python's whitespace rules for polars and
DuckDB regexes, line ends found with numpy, and updates of only the rows that need one.

The fast paths must give exactly what the reference readers give, and those clean text with Python's
``str.split``/``str.strip``; Rust's (polars) and RE2's (DuckDB) notion of whitespace differ from Python's in
\\x1c-\\x1f, so the set is spelled out here once.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa

# Whitespace as Python's str.split() and str.strip() see it (a test checks it against str.isspace)
PY_SPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
RUST_MISSES = b"\x1c\x1d\x1e\x1f"  # what Rust's whitespace lacks of Python's (as UTF-8 bytes)
SPACE_CHARS = "".join(f"\\x{{{ord(c):x}}}" for c in PY_SPACE)  # for a character class of Rust's regex or RE2
SPACE = f"[{SPACE_CHARS}]"
NEEDS_FOLD = SPACE.replace("\\x{20}", "") + "|" + SPACE + "{2}"  # what clean() would change in a stripped value
SQL_SPACE_RUN = SPACE + "+"
SQL_NOT_SPACE = f"[^{SPACE_CHARS}]"
SQL_NEEDS_CLEAN = NEEDS_FOLD + "|^ | $"  # what clean() would change in any value


def sql_literal(value: str) -> str:
    """A SQL literal for a code constant (never a value from a file or a profile: those are bound parameters)."""
    return "'" + value.replace("'", "''") + "'"


def sql_clean(expr: str, row_may_need: str) -> str:
    """DuckDB SQL of ``base.clean(expr)``: whitespace runs (Python's set) to one space, stripped, empty -> NULL.

    ``row_may_need`` is a cheaper test that is true of every row in which some value holds whitespace other than
    a single space between words (``sql_may_need_clean`` of the row's text): where it is false, only a space at
    either end can change, so the regexes are skipped. DuckDB's ``trim`` removes Unicode space separators,
    whose only ASCII member is the space, and costs per value: it runs only where an end is a space, or after the
    runs were folded to spaces."""
    return (f"nullif(CASE WHEN {row_may_need} AND regexp_matches({expr}, {sql_literal(SQL_NEEDS_CLEAN)}) "
            f"THEN trim(regexp_replace({expr}, {sql_literal(SQL_SPACE_RUN)}, ' ', 'g')) "
            f"WHEN {expr} LIKE ' %' OR {expr} LIKE '% ' THEN trim({expr}) ELSE {expr} END, '')")


def sql_may_need_clean(text: str) -> str:
    """DuckDB SQL: whether ``text`` holds a run of spaces or any whitespace but the space (see ``sql_clean``).
    One ``contains`` per character (a memchr each), the non-ASCII ones only for text with non-ASCII characters
    (more bytes than characters): over 1M rows of nine columns ~0.1 s, a regex over the row's text ~0.35 s."""
    ascii_ = [f"contains({text}, chr({ord(c)}))" for c in PY_SPACE if c < "\x80" and c != " "]
    wide = [f"contains({text}, chr({ord(c)}))" for c in PY_SPACE if c >= "\x80"]
    return (f"(contains({text}, '  ') OR {' OR '.join(ascii_)} "
            f"OR (strlen({text}) <> length({text}) AND ({' OR '.join(wide)})))")


def read_chunk(fh: BinaryIO, pending: bytes, most: int, pad: int = 0) -> tuple[bytearray, int]:
    """(a fresh buffer holding ``pending`` and then up to ``most`` bytes read from ``fh``, followed by ``pad``
    zero bytes; its size without them). The file is read straight into the buffer, which is allocated at what
    is left of the file when that is less than ``most``, so a chunk is never copied whole; a size of
    ``len(pending)`` means the end of the file."""
    want = max(0, min(most, os.fstat(fh.fileno()).st_size - fh.tell()))
    data = bytearray(len(pending) + want + pad)
    data[:len(pending)] = pending
    size = len(pending) + fh.readinto(memoryview(data)[len(pending):len(pending) + want])
    del data[size + pad:]
    return data, size


TRANSCODE_BLOCK = 256 << 10  # bytes decoded (and re-encoded) at a time by decode_blocks / transcode


def decode_blocks(data, decoder: codecs.IncrementalDecoder, *, final: bool) -> Iterator[str]:
    """The text of ``data`` (bytes-like) from an incremental ``decoder``, ``TRANSCODE_BLOCK`` bytes at a time: each
    block's str is reused heap memory, where a whole 8 MB chunk's was fresh pages every time (page faults that cost
    ~6% of a cp1251 1C file's load). The decoder keeps a character cut at the end for its next call unless
    ``final``. A ``UnicodeDecodeError`` raised has as ``start`` the offset in ``data`` of the first bad byte."""
    with memoryview(data) as view:
        for start in range(0, len(view), TRANSCODE_BLOCK) or [0]:  # an empty final call still flushes
            held = len(decoder.getstate()[0])  # bytes of a character the previous block cut (UTF-8)
            try:
                yield decoder.decode(view[start:start + TRANSCODE_BLOCK],
                                     final=final and start + TRANSCODE_BLOCK >= len(view))
            except UnicodeDecodeError as exc:
                exc.start, exc.end = start - held + exc.start, start - held + exc.end
                raise


def transcode(prefix: bytes, data, decoder: codecs.IncrementalDecoder, *, final: bool) -> bytearray:
    """``prefix`` and then ``data`` decoded (``decode_blocks``) and encoded as UTF-8, in one growing buffer."""
    out = bytearray(prefix)
    for text in decode_blocks(data, decoder, final=final):
        out += text.encode("utf-8")
    return out


def line_ends(arr: np.ndarray, buf: bytes) -> np.ndarray:
    """End offsets (after the terminator) of the lines in buf (``arr`` is its bytes as uint8): ``\\n``,
    ``\\r\\n`` and a lone ``\\r`` end a line, as in Python's universal newlines."""
    breaks = np.flatnonzero(arr == 10)
    crlf = np.count_nonzero(arr[breaks[breaks > 0] - 1] == 13)  # numpy counts several times faster than bytes
    if np.count_nonzero(arr == 13) != crlf:  # some \r is not followed by \n
        cr = np.flatnonzero(arr == 13)
        after = np.minimum(cr + 1, len(arr) - 1)
        lone = cr[(cr + 1 >= len(arr)) | (arr[after] != 10)]
        if len(lone):
            breaks = np.union1d(breaks, lone)
    ends = breaks.astype(np.int64) + 1
    if not len(ends) or ends[-1] != len(arr):
        ends = np.append(ends, np.int64(len(arr)))
    return ends


def where(values: pl.Series, needed: pl.Series, change: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """``values`` with ``change`` applied to the rows where ``needed`` holds, and only to those (most rows need
    no change, and the change is the expensive part). ``values`` itself is left as it was."""
    rows = np.flatnonzero(needed.fill_null(False).to_numpy())
    if not len(rows):
        return values
    if len(rows) == len(values):  # every row: no gather and scatter
        changed = change(values)
        if changed.dtype == values.dtype:
            return changed.alias(values.name)
        return values.clone().scatter(rows, changed)
    return values.clone().scatter(rows, change(values.gather(rows)))


def folded(values: pl.Series) -> pl.Series:
    """``base.clean`` of already stripped values: whitespace runs folded to one space; empty -> NULL."""
    values = where(values, values.str.contains(NEEDS_FOLD),
                   lambda v: v.str.replace_all(SPACE + "+", " ").str.strip_chars(PY_SPACE))
    return values.set(values == "", None)


def string_heads(values: pl.Series, width: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(byte length, first ``width`` bytes as a uint8 (n, width) array) of each string, NULL counting as length
    0, read straight from the Arrow string views: polars keeps strings as Utf8View, whose 16-byte view per
    string holds its length and its first bytes (inline up to 12 bytes, else a 4-byte prefix). No string is
    materialised, so this is a numpy pass where ``str.head`` would build a string per row. Bytes past a
    string's length are not to be relied on, nor, for a string longer than 12 bytes, any past its fourth
    (``width`` up to 12 reads whole strings of up to 12 bytes)."""
    length, views = _views(values)
    return length, views[:, 4:4 + width]


def _views(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(byte length, NULL as 0; the 16-byte Arrow view of each string as a uint8 (n, 16) array)."""
    arr = values.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.string_view():  # pragma: no cover - polars always exports views at this level
        raise TypeError(f"expected string views, got {arr.type}")
    views = np.frombuffer(arr.buffers()[1], np.uint8).reshape(-1, 16)[arr.offset:arr.offset + len(arr)]
    length = views[:, :4].copy().view(np.int32).ravel()
    if arr.null_count:
        length[values.is_null().to_numpy()] = 0
    return length, views


def _bytes_at(views: np.ndarray, at: int, dtype: str) -> np.ndarray:
    """The little-endian word of type ``dtype`` at byte ``at`` of each 16-byte view (a strided read, no copy)."""
    if not len(views):
        return np.zeros(0, dtype)
    return np.ndarray((len(views),), dtype, buffer=np.ascontiguousarray(views).reshape(-1), offset=at,
                      strides=(16,))


_DIGITS8 = int.from_bytes(b"00.00.00", "little")  # a plain date's first eight bytes XOR this: 0-9 each, dots 0
_DOTS = int.from_bytes(b"\0\0\xff\0\0\xff\0\0", "little")
_HIGH8, _ADD8 = 0x8080808080808080, 0x7676767676767676  # byte + 0x76 sets its high bit from 10 on


def plain_dates(values: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """(the date, NULL unless plain; whether each text is plain) for texts that should be ``dd.mm.yyyy``:
    plain is exactly two digits, a dot, two digits, a dot, four digits, naming a real day of a year from 1 on,
    which is what ``datetime.strptime(text, '%d.%m.%Y')`` accepts in that shape. A 10-byte text lies whole in its
    Arrow view, so its shape is checked on two machine words per text in numpy (a regex per value cost ~3x
    polars' ``strptime``, which alone also takes signs and one-digit days)."""
    length, views = _views(values)
    head = _bytes_at(views, 4, "<u8") ^ np.uint64(_DIGITS8)  # bytes 0-7
    tail = _bytes_at(views, 12, "<u2") ^ np.uint16(0x3030)  # bytes 8-9
    plain = ((length == 10) & (((head + np.uint64(_ADD8)) | head) & np.uint64(_HIGH8) == 0)
             & (head & np.uint64(_DOTS) == 0) & (((tail + np.uint16(0x7676)) | tail) & np.uint16(0x8080) == 0)
             & ((head >> np.uint64(48) != 0) | (tail != 0)))  # year 0000 is no year
    dates = values.str.strptime(pl.Date, "%d.%m.%Y", strict=False)
    plain &= dates.is_not_null().to_numpy()
    return dates.set(pl.Series(~plain), None), plain


