"""The fast path for 1CClientBankExchange files: polars does the per-line work, Python only decodes.

Same rules and the same results as ``onec.read`` (the reference implementation; a parity test runs both on
every fixture and on generated awkward files). The file is read in chunks of whole lines (``CHUNK_BYTES``),
decoded strictly with the encoding ``onec.encoding_of`` verified and re-encoded as UTF-8; numpy finds the line
breaks and polars the first ``=`` of every line, so every line becomes a (head, value) pair of Arrow string
views over the chunk, without a Python object per line. Keys are normalised once per distinct spelling with
``onec.split_line`` (case variants, BOMs, spaces); the spellings seen so far are a polars Enum, so a chunk's
lines are coded by one cast. Structure markers become section ids by cumulative sums, and a document's fields
are the first value of each key in its section (one ``np.minimum.at``), exactly as ``onec.put`` keeps them.
Lines after the last closed section are carried into the next chunk, so a chunk always holds whole documents
and memory depends on the chunk size rather than the file size.

Documents are typed, signed and given their direction from the own accounts (``РасчСчет``, known from the
lines before the document) with vectorised expressions; money stays text until DuckDB casts it to
``DECIMAL(23, 5)``. Everything unusual goes through the reference code itself rather than a second copy of its
rules: balance sections (``onec.section_of``), and every document the fast expressions do not fully cover (an
amount or date that is not plainly ``123.45`` / ``31.12.2025``, no or unknown own account, a purpose continued
in ``НазначениеПлатежа2``, broken structure) is turned into records by ``onec.document``, which also gives the
quarantine reason. Statement balances add up the loaded rows in SQL (``onec.balance_of``). File-level errors
are the reader's, raised for the same line: over-long lines, a first line that is not
``1CClientBankExchange``, content after ``КонецФайла``, bytes the declared encoding cannot decode, a missing
``КонецФайла``.

Where the time goes (``bench/parsers.py --records 300000 --formats 1c``: 96 MB cp1251, 300k documents, 3.6M
lines, 13 chunks; one thread; CPU seconds, least of 5 runs in one process on the shared 2-core machine, 1.7 s
in all): 0.28 s decoding cp1251 and re-encoding UTF-8 in Python (``str.encode`` is two thirds of it), 0.12 s
line breaks, 0.14 s the first ``=`` and the string views, 0.12 s line codes, 0.09 s the structure (numpy),
0.18 s picking and stripping the 17 fields, 0.19 s typing (dates, amounts, names, directions), 0.26 s DuckDB's
insert and ~0.3 s connecting, the manifest and the commit. DuckDB's part and the transcoding are fixed costs
here; what polars and numpy do per line is the rest. Documents are numbered by position with numpy and the own
accounts looked up with ``replace_strict``, where six joins per chunk used to do both (~5% of the CPU time,
interleaved runs on a slow machine: 3.87 -> 3.69 s, medians of 6). A chunk is decoded and re-encoded in 256 KiB
blocks appended to one buffer that starts with the carried lines (``_utf8``): the whole chunk's str, its UTF-8
bytes and the carry + chunk copy were fresh pages every time, and their page faults (sys time) cost ~6% (1.91 ->
1.80 CPU-s, interleaved, medians of 6). Stripping only values whose end bytes may be whitespace, from tails
without their line terminators, was measured and not kept: the gathered views still point into the chunk, and
every later string operation on them got slower (1.94 -> 2.53 s). Dates are checked for the plain
``dd.mm.yyyy`` shape on the bytes inlined in their Arrow views (``columnar.plain_dates``) instead of by a regex
per value: the three date columns of 1M documents 270 -> 189 ms, ~1.5% of the whole (1.880 -> 1.851 CPU-s).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from clientbase.errors import ParseError
from sources import onec
from sources.base import BankTxn, Rejected
from sources.columnar import (
    PY_SPACE,
    RUST_MISSES,
    SPACE,
    decode_blocks,
    folded,
    line_ends,
    plain_dates,
    read_chunk,
    transcode,
    where,
)
from warehouse.load import BulkState

CHUNK_BYTES = 8 << 20
_KNOWN_SPELLINGS = 1024  # line heads coded by an Enum cast
_DECODE_BLOCK = 8192  # TextIOWrapper decodes the reference's input in blocks of this many bytes

_INN_PREFIX = "(?i)" + onec.INN_PREFIX.replace("\\s", SPACE)  # Python's \s, \d and IGNORECASE in Rust's regex
_PLAIN_AMOUNT = r"^[0-9]{1,18}([.,][0-9]{1,5})?$"  # DECIMAL(23, 5) holds it; anything else: reference rules

# Line codes: what a line is to the state machine of onec.read
_EMPTY, _OTHER, _OWN, _PURPOSE_MORE = 0, 1, 2, 3
_STRUCTURE = {onec.SECTION: 4, onec.SECTION_END: 5, onec.DOCUMENT: 6, onec.DOCUMENT_END: 7, onec.FILE_END: 8}
_SECTION, _SECTION_END, _DOCUMENT, _DOCUMENT_END, _FILE_END = _STRUCTURE.values()
_PAYER, _PAYEE = onec.party_keys(onec.PAYER), onec.party_keys(onec.PAYEE)
_FIELDS = (onec.AMOUNT, onec.DATE, onec.BOOKED[onec.PAYER], onec.BOOKED[onec.PAYEE], onec.PURPOSE, *_PAYER, *_PAYEE)
_FIRST_FIELD = 16
_FIELD_CODE = {key: _FIRST_FIELD + n for n, key in enumerate(_FIELDS)}
_NO_LINE = np.iinfo(np.int64).max  # a document without the key


def _code(key: str) -> int:
    if key in _STRUCTURE:
        return _STRUCTURE[key]
    if key in _FIELD_CODE:
        return _FIELD_CODE[key]
    if key == onec.OWN_ACCOUNT:
        return _OWN
    if key.startswith(onec.PURPOSE):
        return _PURPOSE_MORE
    return _OTHER


@dataclass
class _State(BulkState):
    """What the reader knows between chunks."""

    started_at: int = 0  # line of the last section opener (the reference keeps it after the section closes)
    finished: bool = False  # КонецФайла seen
    own: dict[str, int] = field(default_factory=dict)  # own account -> the line from which it is own
    currency: dict[str, str | None] = field(default_factory=dict)  # own account -> currency (None: unknown)
    sections: list[tuple[onec.Section, int]] = field(default_factory=list)  # with the line that closed each
    keys: dict[str, tuple[str, int]] = field(default_factory=dict)  # line head -> (normalised key, code)
    known: list[str] = field(default_factory=list)  # the line heads of known_dtype, in its order
    known_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # their line codes
    known_dtype: pl.Enum | None = None

    def add_own(self, account: str, line: int) -> None:
        if account not in self.own:
            self.own[account] = line
            try:
                self.currency[account] = onec.currency_of(account, self.name)
            except ParseError:
                self.currency[account] = None  # documents on it are rejected by the reference code

    def own_at(self, line: int) -> set[str]:
        return {account for account, since in self.own.items() if since < line}


def load(con: duckdb.DuckDBPyConnection, path: Path, *, file_hash: str, source_file: str,
         run_id: str) -> tuple[int, int, str]:
    """Load one 1C file; returns (rows loaded, rows quarantined, encoding). The caller owns the transaction."""
    name = str(path)
    encoding = onec.encoding_of(path)
    st = _State.start(con, path, file_hash=file_hash, source_file=source_file, run_id=run_id, reader=onec.NAME)
    writer = st.writer
    carry = b""
    for data, position, last in _chunks(path):
        buf, error = _utf8(carry, data, position, encoding, name)
        carry = _process(st, buf, last or error is not None)
        if error is not None:
            raise error
    if not st.finished:
        raise onec.truncated(name, st.record)
    writer.flush()  # the balances add up every loaded row, those of the reference code too
    record = st.record
    for section, closed_at in st.sections:
        record += 1
        (total,), = con.execute(
            "SELECT coalesce(sum(amount), 0) FROM raw.bank_transaction WHERE file_hash = $file_hash "
            "AND source_file = $source_file AND own_account = $account AND source_line > $closed_at "
            "AND booking_date BETWEEN coalesce($start, booking_date) AND coalesce($end, booking_date)",
            {"file_hash": file_hash, "source_file": source_file, "account": section.account,
             "closed_at": closed_at, "start": section.start, "end": section.end}).fetchall()
        section.total = Decimal(total)
        writer.add(onec.balance_of(section, record, name))
    writer.flush()
    return st.loaded + writer.rows_raw, writer.rows_quarantined, encoding


def _chunks(path: Path):
    """(whole lines of the file as read, the file offset of their first byte, is the last chunk)."""
    pending = b""
    position = 0
    with path.open("rb") as fh:
        while True:  # each chunk is a fresh bytearray the file is read into: only the part after the cut is copied
            data, size = read_chunk(fh, pending, CHUNK_BYTES)
            last = size == len(pending)
            cut = size
            if not last:  # end the chunk after a line break (a lone \r only when the chunk has no \n at all)
                cut = data.rfind(b"\n") + 1 or data.rfind(b"\r", 0, size - 1) + 1 or size
            pending = bytes(data[cut:])
            del data[cut:]
            yield data, position, last
            position += cut
            if last:
                return


def _utf8(carry: bytes, data: bytearray, position: int, encoding: str,
          name: str) -> tuple[bytes | bytearray, ParseError | None]:
    """``carry`` and then ``data`` (read at file offset ``position``) as UTF-8, and the decoding error to raise after
    these lines (None: all of ``data`` decodes). Decoded blockwise (``columnar.decode_blocks``) and appended to one
    buffer that starts with the carried lines; UTF-8 is only checked."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        if encoding != "utf-8":
            return transcode(carry, data, decoder, final=True), None
        for _ in decode_blocks(data, decoder, final=True):
            pass
        return (carry + data if carry else data), None
    except UnicodeDecodeError as exc:
        # the reference decodes 8 KiB blocks: lines before the failing block are read, the rest is not
        good = max(0, (position + exc.start) // _DECODE_BLOCK * _DECODE_BLOCK - position)
        good = max(data.rfind(b"\n", 0, good), data.rfind(b"\r", 0, good - 1)) + 1 if good else 0
        head = data[:good] if encoding == "utf-8" else data[:good].decode(encoding).encode("utf-8")
        return carry + head, onec.bad_bytes(encoding, exc.reason, name)


def _process(st: _State, buf: bytes, last: bool) -> bytes:
    """Load the documents of buf; returns the lines after its last closed section (for the next chunk)."""
    if not buf:
        return b""
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = line_ends(arr, buf)
    starts = np.concatenate((np.zeros(1, np.int64), ends[:-1]))
    n = len(ends)
    # every line as (head, tail): head up to and with the first '=' (or the whole line), tail after it; one
    # Arrow array of string views over buf, so no Python object per line
    whole = pl.from_arrow(pa.LargeStringArray.from_buffers(n, pa.py_buffer(np.concatenate((starts[:1], ends))),
                                                            pa.py_buffer(buf)))
    found = whole.str.find("=", literal=True)  # byte offset in the line
    eq = np.where(found.is_null().to_numpy(), ends, starts + found.fill_null(0).to_numpy() + 1)
    offsets = np.empty(2 * n + 1, np.int64)
    offsets[0], offsets[1::2], offsets[2::2] = 0, eq, ends
    parts = pl.from_arrow(pa.LargeStringArray.from_buffers(2 * n, pa.py_buffer(offsets), pa.py_buffer(buf)))
    lines = _Lines(heads=parts.gather_every(2), tails=parts.gather_every(2, offset=1),
                   # polars strips Rust's whitespace, Python's but \x1c-\x1f: the explicit set only when needed
                   spaces=PY_SPACE if any(c in buf for c in RUST_MISSES) else None)

    codes = _codes(st, lines.heads)

    if last:
        done = n
    else:
        closing = np.flatnonzero((codes == _SECTION_END) | (codes == _DOCUMENT_END))
        if not len(closing):
            return buf
        done = int(closing[-1]) + 1
    # from here on, rows are the non-empty lines of the chunk's part that is processed now
    row = np.flatnonzero(codes[:done] != _EMPTY)  # row -> line index in buf
    code = codes[row]
    number = row + (st.line_base + 1)  # line numbers in the file
    errors = _file_errors(st, buf, ends, starts, code, number, done)

    position = np.arange(len(row))
    opener = (code == _SECTION) | (code == _DOCUMENT)
    closer = (code == _SECTION_END) | (code == _DOCUMENT_END)
    last_marker = np.maximum.accumulate(np.where(opener | closer, position, -1))
    before = np.concatenate(([-1], last_marker[:-1]))  # the last marker before each row
    in_block = (before >= 0) & opener[np.maximum(before, 0)]
    nested = np.flatnonzero(opener & in_block)  # opened again before closing (chunks end after a closer)
    if len(nested):
        at = int(nested[0])
        errors.append((int(number[at]), 1, onec.unclosed(int(number[at]), int(number[before[at]]), st.name)))
    block = np.cumsum(opener)
    last_opener = np.maximum.accumulate(np.where(opener, position, -1))
    is_key = in_block & ~opener & ~closer & (code != _FILE_END)
    started_before = st.started_at  # a closer before any opener of this chunk reports this line
    if opener.any():
        st.started_at = int(number[np.flatnonzero(opener)[-1]])

    ends_at = np.flatnonzero(closer)
    opened = last_opener[ends_at]
    ends_here = pl.DataFrame({
        "code": code[ends_at], "line": number[ends_at], "in_block": in_block[ends_at], "block": block[ends_at],
        "opener_line": np.where(opened >= 0, number[np.maximum(opened, 0)], started_before),
        "opener_code": np.where(opened >= 0, code[np.maximum(opened, 0)], -1),
        "opener_row": np.where(opened >= 0, row[np.maximum(opened, 0)], -1),
    })

    # own accounts, in line order: header РасчСчет lines and closed balance sections (through onec.section_of)
    owner_rows = np.flatnonzero(~in_block & (code == _OWN))
    owners = [(int(number[r]), v) for r, v in zip(owner_rows, lines.values(row[owner_rows]), strict=True) if v]
    sections = ends_here.filter(pl.col("code") == _SECTION_END)
    block_keys = _block_keys(st, lines, row, block, is_key, set(sections.filter("in_block")["block"].to_list()))
    for closing_row in sections.iter_rows(named=True):
        if errors and min(e[0] for e in errors) < closing_row["line"]:
            break
        try:
            section = onec.section_of(_opened(closing_row, lines, block_keys), closing_row["opener_line"], st.name)
        except ParseError as exc:
            errors.append((closing_row["line"], 2, exc))
            break
        st.sections.append((section, closing_row["line"]))
        owners.append((closing_row["line"], section.account))
    if errors:
        raise min(errors, key=lambda e: (e[0], e[1]))[2]
    for line, account in sorted(owners, key=lambda o: o[0]):
        st.add_own(account, line)
    st.line_base += done

    documents = ends_here.filter(pl.col("code") == _DOCUMENT_END).with_row_index("doc")
    candidates = documents.filter(pl.col("in_block") & (pl.col("opener_code") == _DOCUMENT))
    plain = _typed(st, _fields(candidates, lines, row, code, block, is_key)).filter("plain")
    # documents are numbered 0.. in file order, so they are positions here, not join keys
    plain_doc = plain["doc"].to_numpy()
    count = np.ones(documents.height, np.int64)  # records per document; the plain ones' from their sides
    count[plain_doc] = plain["count"].to_numpy()
    is_odd = np.ones(documents.height, bool)
    is_odd[plain_doc] = False
    odd_docs = documents.filter(is_odd)
    block_keys = _block_keys(st, lines, row, block, is_key, set(odd_docs.filter("in_block")["block"].to_list()))
    # record numbers run through the documents in file order; the reference code tells how many an odd one uses
    odd_records: dict[int, list[BankTxn | Rejected]] = {}
    for closing_row in odd_docs.iter_rows(named=True):
        recs = odd_records[closing_row["doc"]] = list(onec.document(
            _opened(closing_row, lines, block_keys), st.own_at(closing_row["line"]), [], st.name, 0,
            closing_row["opener_line"]))
        count[closing_row["doc"]] = recs[-1].record_number
    before = np.cumsum(count) - count + st.record
    st.record += int(count.sum())
    for doc, recs in odd_records.items():
        for rec in recs:
            rec.record_number += int(before[doc])
            st.writer.add(rec)
    _insert(st, plain.with_columns(before=pl.Series(before[plain_doc])))
    return buf[int(ends[done - 1]):] if done < n else b""


def _codes(st: _State, heads: pl.Series) -> np.ndarray:
    """The line code of every line. The spellings of earlier chunks are an Enum, so most lines are coded by one
    cast; a spelling not seen before is normalised once by ``onec.split_line`` ('Сумма=' or a line without '=')."""
    if st.known:
        found = heads.cast(st.known_dtype, strict=False).to_physical()
        new = found.is_null().to_numpy()
        codes = st.known_codes[found.fill_null(0).to_numpy()]
    else:
        new, codes = np.ones(len(heads), bool), np.zeros(len(heads), np.int8)
    if new.any():
        at = np.flatnonzero(new)
        fresh = heads.gather(at)
        unique = fresh.unique().to_list()
        if len(st.keys) > 200_000:  # many distinct lines without '=' (free text): keep the cache bounded
            st.keys.clear()
        for head in unique:
            if head not in st.keys:
                line, key, _ = onec.split_line(head)
                st.keys[head] = (key, _code(key) if line else _EMPTY)
        codes[at] = fresh.replace_strict({h: st.keys[h][1] for h in unique}, return_dtype=pl.Int8).to_numpy()
        if len(st.known) < _KNOWN_SPELLINGS:  # free text (lines without '=') would make the Enum grow
            st.known += unique[:_KNOWN_SPELLINGS - len(st.known)]
            st.known_codes = np.array([st.keys[h][1] for h in st.known], np.int8)
            st.known_dtype = pl.Enum(st.known)
    return codes


@dataclass
class _Lines:
    """The lines of a chunk as string views: the head before the first '=' and the tail from it."""

    heads: pl.Series
    tails: pl.Series  # the values as in the file, with the line terminator
    spaces: str | None  # what to strip: None is Rust's whitespace, enough unless \x1c-\x1f occur

    def values(self, at: np.ndarray) -> list[str]:
        """Values (text after the first '=', stripped as the reference does) of a few lines, as Python strings."""
        return [tail.strip() for tail in self.tails.gather(at).to_list()]

    def value_column(self, at: pl.Series) -> pl.Series:
        """Values of many lines (a NULL line: NULL), stripped by polars."""
        return self.tails.str.strip_chars(self.spaces).gather(at)  # in line order: twice as fast as gathered


def _file_errors(st: _State, buf: bytes, ends: np.ndarray, starts: np.ndarray, code: np.ndarray,
                 number: np.ndarray, done: int) -> list[tuple[int, int, ParseError]]:
    """(line, order on the line, error) of the file-level errors in the first ``done`` lines."""
    errors: list[tuple[int, int, ParseError]] = []
    long = np.flatnonzero((ends[:done] - starts[:done]) > onec.MAX_LINE_CHARS)  # bytes >= characters
    for i in long:
        if len(buf[starts[i]:ends[i]].decode("utf-8")) > onec.MAX_LINE_CHARS:
            errors.append((st.line_base + int(i) + 1, 0, onec.line_too_long(st.line_base + int(i) + 1, st.name)))
            break
    if st.line_base == 0:
        line = onec.split_line(buf[:ends[0]].decode("utf-8"))[0]
        if line and line != onec.MAGIC:
            errors.append((1, 1, onec.not_1c(st.name)))
    if st.finished and len(number):
        errors.append((int(number[0]), 1, onec.after_end(int(number[0]), st.name)))
    else:
        at_end = np.flatnonzero(code == _FILE_END)
        if len(at_end):
            st.finished = True
            if at_end[0] + 1 < len(number):
                later = int(number[at_end[0] + 1])
                errors.append((later, 1, onec.after_end(later, st.name)))
    return errors


def _block_keys(st: _State, lines: _Lines, row: np.ndarray, block: np.ndarray, is_key: np.ndarray,
                blocks: set[int]) -> dict[int, list[tuple[str, str]]]:
    """The (key, value) lines of the sections the reference code handles."""
    out: dict[int, list[tuple[str, str]]] = {}
    if blocks:
        rows = np.flatnonzero(is_key & np.isin(block, np.fromiter(blocks, np.int64)))
        heads = lines.heads.gather(row[rows]).to_list()
        for b, head, value in zip(block[rows].tolist(), heads, lines.values(row[rows]), strict=True):
            out.setdefault(b, []).append((st.keys[head][0], value))
    return out


def _opened(closing: dict, lines: _Lines, block_keys: dict[int, list[tuple[str, str]]]) -> dict[str, str]:
    """The keys the reference's state machine holds when this closer comes."""
    if not closing["in_block"]:
        return {}
    current = {}
    if closing["opener_code"] == _DOCUMENT:
        current["_type"] = lines.values(np.array([closing["opener_row"]]))[0]
    for key, value in block_keys.get(closing["block"], ()):
        onec.put(current, key, value)
    return current


def _fields(docs: pl.DataFrame, lines: _Lines, row: np.ndarray, code: np.ndarray, block: np.ndarray,
            is_key: np.ndarray) -> pl.DataFrame:
    """One column per document key: the first value of that key in the document (``onec.put``'s setdefault)."""
    doc_of_block = np.full(int(block[-1]) + 1 if len(block) else 1, -1, np.int64)
    doc_of_block[docs["block"].to_numpy()] = np.arange(docs.height)
    keyed = np.flatnonzero(is_key & (code >= _FIRST_FIELD))
    doc = doc_of_block[block[keyed]]
    keyed, doc = keyed[doc >= 0], doc[doc >= 0]
    # the line of each key (rows, in _FIELD_CODE order) of each document (columns): its first line of the key
    index = np.full(len(_FIELD_CODE) * docs.height, _NO_LINE, np.int64)
    np.minimum.at(index, (code[keyed] - _FIRST_FIELD).astype(np.int64) * docs.height + doc, row[keyed])
    positions = pl.Series(index)
    picked = lines.value_column(positions.set(positions == _NO_LINE, None))
    columns = {key: picked.slice(k * docs.height, docs.height) for k, key in enumerate(_FIELD_CODE)}
    more = np.flatnonzero(is_key & (code == _PURPOSE_MORE))
    continued = {b for b, v in zip(block[more].tolist(), lines.values(row[more]), strict=True) if v}
    return docs.with_columns(purpose_continued=pl.col("block").is_in(list(continued)), **columns)


def _filled(expr: pl.Expr) -> pl.Expr:
    """NULL for an empty value (the reference's ``value or None``)."""
    return pl.when(expr != "").then(expr)


def _names(docs: pl.DataFrame, keys: tuple[str, ...]) -> pl.Series:
    """The party's name: ``Плательщик1``, else ``Плательщик`` without its INN prefix (onec._party)."""
    _, _, name, name_inn, _, _ = keys
    names = docs[name]
    missing = names.is_null() | (names == "")
    names = where(names, missing, lambda _: docs[name_inn].filter(missing).fill_null(""))
    return folded(where(names, missing, lambda v: v.str.replace(_INN_PREFIX, "")))


def _party(keys: tuple[str, ...], prefix: str) -> list[pl.Expr]:
    account, account_also, _, _, inn, bic = (pl.col(k) for k in keys)
    return [
        pl.when(account != "").then(account).otherwise(account_also).alias(f"{prefix}_account"),
        _filled(inn).alias(f"{prefix}_inn"),
        _filled(bic).alias(f"{prefix}_bic"),
    ]


def _date(docs: pl.DataFrame, key: str) -> tuple[pl.Series, pl.Series]:
    """(the date or NULL, whether the fast path can take the text: empty, NULL or a plain valid date)."""
    value, plain = plain_dates(docs[key])
    return value, pl.Series(plain | docs[key].fill_null("").eq("").to_numpy())


def _typed(st: _State, docs: pl.DataFrame) -> pl.DataFrame:
    """Directions, dates and counterparties of the documents, and whether the fast path covers each."""
    doc_date, doc_date_ok = _date(docs, onec.DATE)
    paid, paid_ok = _date(docs, onec.BOOKED[onec.PAYER])
    received, received_ok = _date(docs, onec.BOOKED[onec.PAYEE])
    docs = docs.with_columns(
        *_party(_PAYER, "payer"), *_party(_PAYEE, "payee"),
        doc_date=doc_date, paid=paid, received=received,
        dates_ok=doc_date_ok & paid_ok & received_ok,
        amount_text=pl.col(onec.AMOUNT).str.replace(",", ".", literal=True),
        amount_ok=pl.col(onec.AMOUNT).str.contains(_PLAIN_AMOUNT).fill_null(False),
        payer_name=_names(docs, _PAYER), payee_name=_names(docs, _PAYEE), purpose=folded(docs[onec.PURPOSE]),
    )
    accounts = list(st.own)  # a handful: looked up with replace_strict, cheaper than two joins per chunk
    looked_up = {"since": ([st.own[a] for a in accounts], pl.Int64),
                 "currency": ([st.currency[a] for a in accounts], pl.String)}
    docs = docs.with_columns(
        (pl.col(f"{side}_account").replace_strict(accounts, values, default=None, return_dtype=dtype)
         if accounts else pl.lit(None, dtype)).alias(f"{side}_{what}")
        for side in ("payer", "payee") for what, (values, dtype) in looked_up.items())
    payer_own = (pl.col("payer_since") < pl.col("line")).fill_null(False)
    payee_own = (pl.col("payee_since") < pl.col("line")).fill_null(False)
    docs = docs.with_columns(payer_own=payer_own, payee_own=payee_own,
                             payer_booking=pl.coalesce("paid", "doc_date"),
                             payee_booking=pl.coalesce("received", "doc_date"))
    side_ok = [~pl.col(f"{s}_own") | (pl.col(f"{s}_currency").is_not_null() & pl.col(f"{s}_booking").is_not_null())
               for s in ("payer", "payee")]
    return docs.with_columns(
        plain=pl.col("amount_ok") & pl.col("dates_ok") & ~pl.col("purpose_continued")
        & (pl.col("payer_own") | pl.col("payee_own")) & side_ok[0] & side_ok[1],
        count=pl.col("payer_own").cast(pl.Int64) + pl.col("payee_own").cast(pl.Int64),
    )


_SIDE = """
    SELECT $file_hash AS file_hash, $source_file AS source_file, (before + {offset})::INTEGER AS record_number,
           opener_line::INTEGER AS source_line, $reader AS reader, {side}_account AS own_account,
           {side}_booking AS booking_date, doc_date AS value_date,
           {sign}CAST(amount_text AS DECIMAL(23, 5)) AS amount, {side}_currency AS currency,
           {other}_name AS counterparty_name, {other}_inn AS counterparty_tax_id,
           {other}_account AS counterparty_account, {other}_bic AS counterparty_bic, purpose,
           NULL AS bank_reference, NULL AS end_to_end_id, 'BOOK' AS status, false AS is_reversal
    FROM _onec_docs WHERE {side}_own"""
# The payer's side first (money out, record before + 1), then the payee's; only code constants are spliced in.
_INSERT = ("INSERT INTO raw.bank_transaction BY NAME"
           + _SIDE.format(offset="1", side="payer", other="payee", sign="-") + "\nUNION ALL"
           + _SIDE.format(offset="1 + payer_own::INTEGER", side="payee", other="payer", sign=""))
_DOC_COLUMNS = ("before", "opener_line", "doc_date", "amount_text", "purpose", "payer_own", "payee_own",
                *(f"{side}_{what}" for side in ("payer", "payee")
                  for what in ("account", "booking", "currency", "name", "inn", "bic")))


def _insert(st: _State, docs: pl.DataFrame) -> None:
    """One or two rows per plain document (two when both accounts are own), typed and signed by DuckDB."""
    if not docs.height:
        return
    st.con.register("_onec_docs", docs.select(_DOC_COLUMNS).to_arrow(compat_level=pl.CompatLevel.newest()))
    try:
        st.con.execute(_INSERT, st.params)  # DuckDB reads Arrow string views without copying them first
    finally:
        st.con.unregister("_onec_docs")
    st.loaded += int(docs["count"].sum())
