"""The fast path for camt.052/053/054: a columnar tokenizer over the bytes; numpy and polars do the per-tag work.

Same results as ``camt.read`` (the reference implementation: lxml ``iterparse`` and one Python walk per entry); a
parity test runs both on every fixture and on generated awkward documents. Machine-written camt is a very regular
XML subset, and only that subset is read here: the file is cut into chunks that end after a ``</Ntry>``
(``CHUNK_BYTES``), and in each chunk numpy finds every ``<`` and ``>``, so a chunk is a sequence of tags, each
followed by its text, without a Python object per tag. A tag's spelling (the bytes between ``<`` and ``>``, up to
24 of them read as three masked 64-bit words) is looked up in a hash table of the spellings seen so far; a new
spelling is parsed once in Python with strict regexes (local name, optional prefix declared on the root element,
``name="value"`` attributes) into its kind (open, close, empty), qualified name, the code of its local name and
its ``Ccy`` attribute. Nesting levels are a cumulative sum of +1/-1; a stable sort by level puts every close tag
right after its open tag (both checked to carry the same name: well-formedness) and gives each open tag its parent
(the open tag just before it if that is one, else its previous sibling's parent: a forward fill per level). The
path of local names of every element is then a state of a small automaton (``_STATES``, built from the paths the
reference reads), computed level by level with one table lookup per tag. Machine-written entries repeat a few
layouts: an entry whose tags are spelled exactly like an earlier entry's of the same chunk (grouped by length and
two sums of spelling ids, then compared tag for tag; ``_repeats``) takes that entry's path states, once it is
checked to sit where an entry may (an open element at level 2, a statement, right above it); only the other tags
go through the sort and the automaton, which checks everything about them as before. Fields are picked by (state,
statement/balance/entry/split) as the first element of each (the reference's ``find``), their texts become Arrow
string views over the chunk, and the few that hold an entity or odd whitespace are decoded and cleaned
(``base.clean``) row by row. Entries are typed with polars expressions (plain amounts as exact ``Decimal(23, 5)``,
plain ISO dates, CRDT/DBIT, the reference's precedence rules for names, accounts, purposes and references) and
inserted into DuckDB in one statement per chunk. Source lines are the number of ``\\n`` before the ``>`` of the
start tag (lxml's ``sourceline``).

Rules are not restated where they can be shared: statements' balances go through ``camt.balance`` and
``camt.statement_balance`` (a few per statement, in Python), and every entry the vectorised rules do not fully
cover (an amount that is not plainly ``123.45``, a date that is not ``YYYY-MM-DD``, a bad indicator, a split
without amount, more than one ``BookgDt``/``ValDt``/``OrgId``, ...) is parsed on its own by lxml and turned
into records by the reference's ``camt.entry_records``. Anything outside the subset hands the whole file to
the reference reader (``camt.read`` through the ``RecordWriter``, exactly what ingestion did before): a byte
order mark, invalid UTF-8, a ``<!`` (DOCTYPE, comment, CDATA) or ``<?`` other than a UTF-8 XML declaration,
entity references other than the five predefined and numeric ones, XML-forbidden characters, a lone ``\\r``,
a tag the regexes do not take, mismatched or unclosed tags, namespace declarations below the root, event
elements (``Stmt``/``Rpt``/``Ntfctn``, ``Bal``, ``Ntry``) in unexpected places, a statement whose ``Acct``,
``Id`` or ``Bal`` are not where the schema puts them. A file found odd after some chunks were loaded is
loaded again from the start by the reference: the rows this load wrote are deleted first, inside the file's
transaction (``ops.ingested_file.file_hash`` is the primary key, so no other load's rows share the hash).

Where the time goes (``bench/parsers.py --records 300000 --formats camt``: 139 MB, 300k entries with one split
each, one per line, 14.4M tags in 17 chunks of 8 MB read into a fresh buffer each (only the tail after the cut
is copied to the next); one thread; least CPU of three loads in one process, 2026-11-30 on a fast spell of the
shared 2-core machine, ~2.3 s in all; the first load of a process ~0.25 s more): ~0.8 s the tags (0.16 s
finding '<' and '>' and their checks, 0.36 s the spelling lookup of 14.4M tags, 0.17 s finding repeated entries,
0.1 s the structure of the other tags and the copies), 0.13 s picking fields by (state, scope), 0.27 s the
texts (string views, entity and whitespace checks), 0.5 s typing entries and splits in polars (no text column
is gathered for an element absent from the whole chunk), 0.2 s DuckDB's INSERT and 0.3 s its COMMIT. The
spelling lookup (three masked words, a multiplicative hash, table gathers) is the largest single piece. The
reference reader does ~15-19k entries per CPU-second on the same file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from lxml import etree

from sources import camt
from sources.base import BankTxn, Rejected
from sources.columnar import NEEDS_FOLD, PY_SPACE, SPACE, read_chunk, where
from warehouse.load import BulkState, RecordWriter

CHUNK_BYTES = 8 << 20
_MAX_TEXT = 1 << 20  # longer texts and tags: the reference (libxml2 has limits of its own)
_MAX_TAG = 4096
_MAX_LEVEL = 64
_BIG_LINE = 65535  # libxml2 keeps an element's line in 16 bits: lxml's sourceline from here is found otherwise
_MAX_SPELLINGS = 100_000  # distinct tag spellings kept (attribute values make them); then the table restarts

# ---- the paths the reference reads, as states of an automaton over local names -------------------------------

_SIDES = (("Dbtr", "DbtrAcct", "DbtrAgt"), ("Cdtr", "CdtrAcct", "CdtrAgt"))  # side chosen by the sign
_BAL, _NTRY, _TX = ("Bal",), ("Ntry",), ("Ntry", *camt.SPLITS)
_CONTAINER_PATHS = (("Id",), ("Acct",), ("Acct", "Id", "IBAN"), ("Acct", "Id", "Othr", "Id"), ("Acct", "Ccy"))
_BAL_PATHS = (("Tp", "CdOrPrtry", "Cd"), ("Amt",), ("CdtDbtInd",), ("Dt",), ("Dt", "Dt"), ("Dt", "DtTm"))
_ENTRY_PATHS = (("Amt",), ("CdtDbtInd",), ("Sts",), ("Sts", "Cd"), ("BookgDt",), ("BookgDt", "Dt"),
                ("BookgDt", "DtTm"), ("ValDt",), ("ValDt", "Dt"), ("ValDt", "DtTm"), ("RvslInd",), ("AcctSvcrRef",),
                ("NtryRef",), ("AddtlNtryInf",))
_TX_PATHS = (("Amt",), ("AmtDtls", "TxAmt", "Amt"), ("CdtDbtInd",), ("RmtInf", "Ustrd"),
             ("RmtInf", "Strd", "CdtrRefInf", "Ref"), ("AddtlTxInf",), ("Refs", "EndToEndId"), ("Refs", "AcctSvcrRef"),
             *(p for side, acct, agent in _SIDES for p in (
                 ("RltdPties", side, "Nm"), ("RltdPties", side, "Pty", "Nm"), ("RltdPties", side, "Id", "OrgId"),
                 ("RltdPties", side, "Id", "OrgId", "Othr", "Id"), ("RltdPties", side, "Pty", "Id", "OrgId"),
                 ("RltdPties", side, "Pty", "Id", "OrgId", "Othr", "Id"), ("RltdPties", acct, "Id", "IBAN"),
                 ("RltdPties", acct, "Id", "Othr", "Id"), ("RltdAgts", agent, "FinInstnId", "BICFI"),
                 ("RltdAgts", agent, "FinInstnId", "BIC"))))
# every path relative to a statement (Stmt/Rpt/Ntfctn), and the scope whose first element of it is picked
_FIELDS = {**{p: "container" for p in _CONTAINER_PATHS}, _BAL: "container", _NTRY: "container",
           **{(*_BAL, *p): "bal" for p in _BAL_PATHS}, **{(*_NTRY, *p): "entry" for p in _ENTRY_PATHS},
           _TX: "entry", **{(*_TX, *p): "tx" for p in _TX_PATHS}}
_OTHER, _START, _ROOT, _GROUP, _CONTAINER = range(5)  # states: _OTHER absorbs everything below it
_STATES: dict[tuple[str, ...], int] = {(): _CONTAINER}
for _path in _FIELDS:
    for _n in range(1, len(_path) + 1):
        _STATES.setdefault(_path[:_n], len(_STATES) + _CONTAINER)
_NAMES = ("", *sorted({n for p in _STATES for n in p} | camt.CONTAINERS))
_CODE = {n: i for i, n in enumerate(_NAMES)}
_DECLARING = len(_NAMES)  # the code of a start tag that declares namespaces: the root's only
_NEXT = np.zeros((len(_STATES) + _CONTAINER, len(_NAMES) + 1), np.int16)  # state of a child: [parent's, its code]
_NEXT[_START, :], _NEXT[_ROOT, :] = _ROOT, _GROUP
for _name in camt.CONTAINERS:
    _NEXT[_GROUP, _CODE[_name]] = _CONTAINER
for _path, _state in _STATES.items():
    if _path:
        _NEXT[_STATES[_path[:-1]], _CODE[_path[-1]]] = _state
_NEXT_FLAT = _NEXT.ravel()  # a view: _NEXT is filled below
_EXPECTED = np.full(len(_NAMES) + 1, -1, np.int16)  # elements the reference reacts to, wherever they are: only here
_EXPECTED[[_CODE[n] for n in camt.CONTAINERS]] = _CONTAINER
_EXPECTED[_CODE["Bal"]], _EXPECTED[_CODE["Ntry"]] = _STATES[_BAL], _STATES[_NTRY]
_EXPECTED[_DECLARING] = _ROOT
_SCOPE_OPENER = {"container": _CONTAINER, "bal": _STATES[_BAL], "entry": _STATES[_NTRY], "tx": _STATES[_TX]}
_SCOPES = tuple(_SCOPE_OPENER)
_SCOPE_OF = np.full(len(_STATES) + _CONTAINER, -1, np.int8)  # the scope of a picked path's state
_SCOPE_OF[[_STATES[p] for p in _FIELDS]] = [_SCOPES.index(scope) for scope in _FIELDS.values()]
_PICKED = np.zeros(len(_STATES) + _CONTAINER, bool)
_PICKED[[_STATES[p] for p in _FIELDS]] = _PICKED[_CONTAINER] = True  # statements open a scope
_READ = _PICKED.copy()  # the picked elements whose text is read (the others are counted or open a scope)
_READ[[_STATES[p] for p in _FIELDS if p in (_BAL, _NTRY, _TX, ("Acct",), (*_BAL, "Dt"), (*_NTRY, "BookgDt"),
                                              (*_NTRY, "ValDt")) or p[-1] == "OrgId"]] = False

# ---- tag spellings ------------------------------------------------------------------------------------------------

_OPEN, _EMPTY, _CLOSE = 1, 0, -1
_WS = rb"[ \t\r\n]"
_NAME = rb"[A-Za-z_][A-Za-z0-9_.\-]*"
_START_TAG = re.compile(rb"(?:(" + _NAME + rb"):)?(" + _NAME + rb")((?:" + _WS + rb"+(?:" + _NAME + rb":)?" + _NAME
                        + _WS + rb"*=" + _WS + rb"*(?:\"[^\"<&\t\r\n]*\"|'[^'<&\t\r\n]*'))*)" + _WS + rb"*(/?)")
_ATTRIBUTE = re.compile(_WS + rb"+(?:(" + _NAME + rb"):)?(" + _NAME + rb")" + _WS + rb"*=" + _WS
                        + rb"*(?:\"([^\"]*)\"|'([^']*)')")
# a namespace name the fast path takes: an absolute URI in plain characters (urn:iso:..., http://...); any other
# value goes to lxml, which refuses some (libxml2: "xmlns: '$rn:iso:...' is not a valid URI")
_NAMESPACE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9._~:/?#@!$&'()*+,;=-]*")
_END_TAG = re.compile(rb"/(?:(" + _NAME + rb"):)?(" + _NAME + rb")" + _WS + rb"*")
_DECLARATION = re.compile(rb"<\?xml" + _WS + rb"+version" + _WS + rb"*=" + _WS + rb"*(?:\"1\.0\"|'1\.0')(?:" + _WS
                          + rb"+encoding" + _WS + rb"*=" + _WS + rb"*(?:\"(?i:utf-8)\"|'(?i:utf-8)'))?(?:" + _WS
                          + rb"+standalone" + _WS + rb"*=" + _WS + rb"*(?:\"(?:yes|no)\"|'(?:yes|no)'))?" + _WS
                          + rb"*\?>")
_ENTRY_END = re.compile(rb"</(?:" + _NAME + rb":)?Ntry" + _WS + rb"*>")
_BAD_REFERENCE = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});)")
_NUMERIC_REFERENCE = re.compile(rb"&#(x[0-9a-fA-F]+|[0-9]+);")
_REFERENCE = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);")
_PREDEFINED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [(1 << 64) - 1], np.uint64)
_MIX = tuple(np.uint64(m) for m in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5))
_WORDS = 3  # spellings up to 24 bytes are keyed by three 64-bit words; longer ones by their bytes


def _views(buf: bytes, words: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pl.Series:
    """``buf[starts:ends]`` as a polars string column of Arrow string views over buf, the 16-byte views built by
    numpy (``words``: the little-endian word at every byte of buf): length, then the bytes themselves up to 12
    bytes, else their first four, buffer 0 and the offset. buf is valid UTF-8 and each piece ends before a '<'."""
    length = (ends - starts).astype(np.uint64)
    inline = length <= 12
    head = words[starts]
    views = np.empty((len(starts), 2), np.uint64)
    views[:, 0] = length | (head & _MASKS[np.minimum(length, 4)]) << np.uint64(32)
    views[:, 1] = np.where(inline, words[starts + 4] & _MASKS[np.minimum(np.maximum(length, 4) - 4, 8)],
                           starts.astype(np.uint64) << np.uint64(32))
    return pl.from_arrow(pa.Array.from_buffers(pa.string_view(), len(starts),
                                               [None, pa.py_buffer(views), pa.py_buffer(buf)]))


class _Fallback(Exception):
    """The file is outside the subset this module reads: the reference reader loads it."""


def _xml_char(code: int) -> bool:
    return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


def _unescape(text: str) -> str:
    """A text as lxml gives it: line ends normalised, then the predefined and numeric references decoded."""
    def one(m: re.Match) -> str:
        ref = m.group(1)
        if ref[0] == "#":
            return chr(int(ref[2:], 16) if ref[1] == "x" else int(ref[1:]))
        return _PREDEFINED[ref]
    return _REFERENCE.sub(one, text.replace("\r\n", "\n"))


class _Spellings:
    """Tag spellings (the bytes between '<' and '>') seen so far, with what each means, and a hash table keyed by
    the spelling's first 24 bytes (three masked words) and its length, so a chunk's tags are coded by numpy."""

    _BITS = 16

    def __init__(self, prefixes: set[str]):
        self.prefixes = prefixes
        self.qnames: dict[bytes, int] = {}  # kept for the file: the open elements carried between chunks use them
        self.currencies: list[str | None] = [None]
        self.reset()

    def reset(self) -> None:
        size = 1 << self._BITS
        self.table_words = np.zeros((_WORDS, size), np.uint64)
        self.table_length = np.full(size, -1, np.int64)
        self.table_id = np.full(size, -1, np.int32)
        self.ids: dict[bytes, int] = {}
        self.props: list[tuple[int, int, int, int]] = []  # kind, qualified-name id, local-name code, Ccy id
        self.arrays()

    def arrays(self) -> None:
        props = np.array(self.props or [(0, 0, 0, 0)], np.int64).reshape(-1, 4)
        self.kind = props[:, 0].astype(np.int8)
        self.qname = props[:, 1].astype(np.int32)
        self.code = props[:, 2].astype(np.int16)
        self.ccy = props[:, 3].astype(np.int32)

    def parse(self, spelling: bytes) -> tuple[int, int, int, int]:
        """(kind, qualified-name id, local-name code, Ccy id) of a spelling; the code is ``_DECLARING`` when it
        declares namespaces. A spelling outside the subset: _Fallback."""
        if spelling.startswith(b"/"):
            m = _END_TAG.fullmatch(spelling)
            kind, ccy, declares = _CLOSE, 0, False
        else:
            m = _START_TAG.fullmatch(spelling)
            if m is None:
                raise _Fallback
            kind = _EMPTY if m.group(4) else _OPEN
            ccy, declares = self._attributes(m.group(3))
        if m is None or m.group(1) is not None and m.group(1).decode() not in self.prefixes:
            raise _Fallback  # undeclared prefix: lxml fails on it
        qname = spelling[1:m.end(2)] if kind == _CLOSE else spelling[:m.end(2)]
        code = _DECLARING if declares else _CODE.get(m.group(2).decode(), 0)
        return kind, self.qnames.setdefault(qname, len(self.qnames)), code, ccy

    def _attributes(self, text: bytes) -> tuple[int, bool]:
        seen: set[bytes] = set()
        ccy, declares = 0, False
        for prefix, local, double, single in _ATTRIBUTE.findall(text):
            value = (double or single).decode()
            if local in seen:
                raise _Fallback  # duplicate attributes (or the same name in two namespaces)
            seen.add(local)
            if (not prefix and local == b"xmlns") or prefix == b"xmlns":
                declares = True
                if prefix == b"xmlns" and (not value or local in (b"xml", b"xmlns")):
                    raise _Fallback
                if value and not _NAMESPACE_URI.fullmatch(value):
                    raise _Fallback
            elif prefix and prefix != b"xml" and prefix.decode() not in self.prefixes:
                raise _Fallback
            elif not prefix and local == b"Ccy" and value:
                if value not in self.currencies:
                    self.currencies.append(value)
                ccy = self.currencies.index(value)
        return ccy, declares

    def lookup(self, buf: bytes, padded: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The spelling id of every tag (``buf[starts:ends]``). Its first 24 bytes are three little-endian words
        (the bytes past the spelling zeroed; the second and third only where the spelling is that long)."""
        if len(self.ids) > _MAX_SPELLINGS:  # many attribute values: start again (ids are per chunk)
            self.reset()
        length = ends - starts
        words = [padded[starts] & _MASKS.take(np.minimum(length, 8))]
        longer = [np.flatnonzero(length > 8)]
        longer.append(longer[0][length[longer[0]] > 16])
        for w, at in enumerate(longer, start=1):
            words.append(padded[starts[at] + 8 * w] & _MASKS.take(np.minimum(length[at] - 8 * w, 8)))
        mixed = (words[0] ^ length.view(np.uint64)) * _MIX[0]
        for w, at in enumerate(longer, start=1):
            mixed[at] ^= words[w] * _MIX[w]
        slot = (mixed >> np.uint64(64 - self._BITS)).astype(np.intp)
        ids = self.table_id.take(slot)
        hit = self.table_length.take(slot) == length  # -1 in a free slot
        hit &= self.table_words[0].take(slot) == words[0]
        for w, at in enumerate(longer, start=1):
            hit[at] &= self.table_words[w].take(slot[at]) == words[w]
        missed = np.flatnonzero(~hit)
        if len(missed):
            full = [words[0]] + [np.zeros(len(length), np.uint64) for _ in longer]
            for w, at in enumerate(longer, start=1):
                full[w][at] = words[w]
            while len(missed):  # a few thousand at a time: the first ones teach the table most of the rest
                head, missed = missed[:4096], missed[4096:]
                ids[head] = self._add(buf, starts[head], ends[head], [w[head] for w in full], mixed[head])
                if len(missed):
                    again = slot[missed]
                    found = self.table_id[again]
                    hit = (found >= 0) & (self.table_length[again] == length[missed])
                    for w in range(_WORDS):
                        hit &= self.table_words[w][again] == full[w][missed]
                    ids[missed[hit]] = found[hit]
                    missed = missed[~hit]
        return ids

    def _add(self, buf: bytes, starts: np.ndarray, ends: np.ndarray, words: list[np.ndarray],
             mixed: np.ndarray) -> np.ndarray:
        length = ends - starts
        # one representative per distinct 64-bit mix; a tag whose words differ from its representative's (two
        # spellings, one mix) or that is longer than 24 bytes is looked up by its bytes
        _, first, inverse = np.unique(mixed, return_index=True, return_inverse=True)
        ids = np.empty(len(first), np.int32)
        for u, i in enumerate(first.tolist()):
            spelling = bytes(buf[starts[i]:ends[i]])
            sid = self.ids.get(spelling)
            if sid is None:
                sid = self.ids[spelling] = len(self.props)
                self.props.append(self.parse(spelling))
                s = int(mixed[i] >> np.uint64(64 - self._BITS))
                if length[i] <= 8 * _WORDS and self.table_id[s] < 0:
                    self.table_id[s], self.table_length[s] = sid, length[i]
                    for w in range(_WORDS):
                        self.table_words[w][s] = words[w][i]
            ids[u] = sid
        out = ids[inverse]
        same = length == length[first][inverse]
        for w in range(_WORDS):
            same &= words[w] == words[w][first][inverse]
        for i in np.flatnonzero(~same | (length > 8 * _WORDS)).tolist():
            spelling = bytes(buf[starts[i]:ends[i]])
            sid = self.ids.get(spelling)
            if sid is None:
                sid = self.ids[spelling] = len(self.props)
                self.props.append(self.parse(spelling))
            out[i] = sid
        self.arrays()
        return out


# ---- state carried between chunks -------------------------------------------------------------------------------

@dataclass
class _Statement:
    """The statement (Stmt/Rpt/Ntfctn) being read: what the reference keeps while it reads one."""

    account: str
    currency: str | None
    statement_id: str | None
    balances: camt.Balances = field(default_factory=dict)
    total: Decimal = Decimal(0)  # booked entries so far


@dataclass
class _State(BulkState):
    spellings: _Spellings | None = None
    wrapper: bytes = b""  # the root's namespace prefixes, declared around an entry parsed on its own
    stack: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (kind, qname, code) of the open elements
    statement: _Statement | None = None  # open at the end of the last chunk
    written: bool = False  # rows inserted or handed to the writer


def load(con: duckdb.DuckDBPyConnection, path: Path, *, file_hash: str, source_file: str,
         run_id: str) -> tuple[int, int, str | None]:
    """Load one camt file; returns (rows loaded, rows quarantined, encoding: None like the reader). The caller
    owns the transaction."""
    st = _State.start(con, path, file_hash=file_hash, source_file=source_file, run_id=run_id, reader=camt.NAME)
    try:
        for buf, size, start, last in _chunks(path):
            _process(st, buf, size, start, last)
        st.writer.flush()
        return st.loaded + st.writer.rows_raw, st.writer.rows_quarantined, None
    except _Fallback:
        pass
    if st.written:  # undo this load's rows (it owns the file's transaction; the manifest's key is the hash)
        for table in _TABLES:
            con.execute(f"DELETE FROM {table} WHERE {_THIS_FILE}",  # noqa: S608 - table names are code constants
                        {"file_hash": file_hash, "source_file": source_file})
    writer = RecordWriter(con, file_hash=file_hash, source_file=source_file, reader=camt.NAME, run_id=run_id)
    for rec in camt.read(path):
        writer.add(rec)
    writer.flush()
    return writer.rows_raw, writer.rows_quarantined, None


_TABLES = ("raw.bank_transaction", "raw.statement_balance", "ops.quarantine")  # what a load writes
_THIS_FILE = "file_hash = $file_hash AND source_file = $source_file"
_PAD = bytes(8 * _WORDS + 8)  # zeros after a chunk: words can be read at every byte of it


def _chunks(path: Path):
    """(bytes and ``_PAD``, their size without it, offset where the tags start, is the last chunk): chunks but
    the last end right after a ``</Ntry>``; the first starts after the XML declaration. Each chunk is a fresh
    ``bytearray`` the file is read into (the chunk's string views point into it): the few bytes after the cut
    are carried to the next one, so no chunk is copied whole."""
    pending, start = b"", None
    with path.open("rb") as fh:
        while True:
            data, size = read_chunk(fh, pending, CHUNK_BYTES, len(_PAD))
            if start is None:
                m = _DECLARATION.match(data) if data.startswith(b"<?xml") else None
                if data.startswith(b"<?xml") and m is None:
                    raise _Fallback
                start = m.end() if m else 0
            if size == len(pending):  # end of file
                yield data, size, start, True
                return
            cut = _cut(data, start, size)
            if cut:
                pending = bytes(data[cut:size])
                data[cut:cut + len(_PAD)] = _PAD
                del data[cut + len(_PAD):]
                yield data, cut, start, False
                start = 0
            else:
                pending = bytes(data[:size])


def _cut(data: bytearray, start: int, size: int) -> int:
    """The offset after the last ``</Ntry>`` in ``data[:size]`` (0: none)."""
    at = size
    while True:
        at = data.rfind(b"Ntry", start, at)
        if at < 0:
            return 0
        m = _ENTRY_END.match(data, data.rfind(b"<", start, at))
        if m is not None and m.end() > at:
            return m.end()


def _check_bytes(buf: bytes, arr: np.ndarray) -> np.ndarray:
    """What the subset allows of the bytes: UTF-8 without BOM and without characters XML forbids, no lone
    ``\\r``, only predefined and numeric references to allowed characters. Returns the offsets of the ``\\n``.
    (``<!``, ``<?`` and ``]]>`` are found with the tags.)"""
    if buf.startswith(b"\xef\xbb\xbf"):
        raise _Fallback
    if not buf.isascii():
        try:
            buf.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fallback from None
        if b"\xef\xbf\xbe" in buf or b"\xef\xbf\xbf" in buf:
            raise _Fallback
    low = np.flatnonzero(arr < 32)
    code = arr[low]
    breaks = low[code == 10]
    if len(breaks) != len(low):
        returns = low[code == 13]
        if len(breaks) + len(returns) + np.count_nonzero(code == 9) != len(low):
            raise _Fallback  # characters XML forbids
        if len(returns) and (returns[-1] + 1 >= len(arr) or (arr[returns + 1] != 10).any()):
            raise _Fallback  # a lone \\r (lxml counts it as a line break)
    if b"&" in buf:
        if _BAD_REFERENCE.search(buf):
            raise _Fallback
        for ref in set(_NUMERIC_REFERENCE.findall(buf)):
            if not _xml_char(int(ref[1:], 16) if ref[:1] == b"x" else int(ref)):
                raise _Fallback
    return breaks


@dataclass
class _Tokens:
    """The tags of a chunk (the carried open elements of earlier chunks first, at no position)."""

    words: np.ndarray  # the little-endian 64-bit word at every byte of the chunk (zeros past its end)
    lt: np.ndarray  # offset of '<' (-1 for a carried element)
    gt: np.ndarray  # offset of '>'
    kind: np.ndarray
    spelling: np.ndarray  # the spelling id of each tag (the carried elements have none)
    state: np.ndarray


def _process(st: _State, buf: bytes, size: int, start: int, last: bool) -> None:
    if size >= 1 << 31:
        raise _Fallback  # no '</Ntry>' for 2 GB: string views hold 32-bit offsets
    arr = np.frombuffer(buf, np.uint8, count=size)
    breaks = _check_bytes(buf, arr)
    tokens = _tokens(st, buf, arr, start, last)
    fields = _Fields(st, buf, breaks, tokens)
    statements = _statements(st, fields, tokens)
    entries = _entries(fields, statements)
    _write(st, buf, fields, tokens, statements, entries)
    st.line_base += int(fields.breaks_total)


def _tokens(st: _State, buf: bytes, arr: np.ndarray, start: int, last: bool) -> _Tokens:
    """Tags, their kinds, names, levels and path states; everything that makes the file odd raises _Fallback."""
    marks = np.flatnonzero((arr | 2) == 62)  # '<' and '>' (0x3C, 0x3E: no other byte or'ed with 2 gives 0x3E)
    if start:
        marks = marks[np.searchsorted(marks, start):]
    lt, gt = marks[0::2], marks[1::2]
    if not len(lt):
        raise _Fallback
    if not (len(gt) == len(lt) and (arr[lt] == 60).all() and (arr[gt] == 62).all()):  # some '>' is in a text
        lt, gt = marks[arr[marks] == 60], marks[arr[marks] == 62]
        if not len(lt):
            raise _Fallback
        at = np.searchsorted(gt, lt)
        if at[-1] >= len(gt):
            raise _Fallback
        gt = gt[at]
        if (lt[1:] < gt[:-1]).any() or b"]]>" in buf:
            raise _Fallback  # a '<' in a tag, or ']]>' in a text
    if (gt - lt).max() > _MAX_TAG or (len(lt) > 1 and (lt[1:] - gt[:-1]).max() > _MAX_TEXT):
        raise _Fallback
    if buf[gt[-1] + 1:len(arr)].strip(b" \t\r\n") if last else gt[-1] + 1 != len(arr):
        raise _Fallback
    if st.spellings is None:  # the root element: its prefixes are the only ones allowed
        if buf[start:lt[0]].strip(b" \t\r\n"):
            raise _Fallback
        root = bytes(buf[lt[0] + 1:gt[0]])
        m = _START_TAG.fullmatch(root)
        if m is None or m.group(4):
            raise _Fallback
        prefixes = {local.decode() for p, local, _, _ in _ATTRIBUTE.findall(m.group(3)) if p == b"xmlns"}
        st.spellings = _Spellings(prefixes)
        st.wrapper = b"<w" + b"".join(b' xmlns:%s="urn:w"' % p.encode() for p in sorted(prefixes)) + b">"
    sp = st.spellings
    words = np.ndarray((len(arr) + 8 * _WORDS,), "<u8", buffer=buf, strides=(1,))  # a word at every byte
    ids = sp.lookup(buf, words, lt + 1, gt)
    carried = st.stack if st.stack is not None else (np.zeros(0, np.int8),) * 3
    k = len(carried[0])
    n = k + len(ids)
    kind = np.empty(n, np.int8)
    kind[:k] = carried[0]
    np.take(sp.kind, ids, out=kind[k:])
    lt = np.concatenate((np.full(k, -1, np.int64), lt))
    gt = np.concatenate((np.full(k, -1, np.int64), gt))
    state = np.empty(n, np.int16)
    repeats = _repeats(ids, kind[k:], sp.code)
    if repeats is None:
        state[:], stack = _structure(kind, sp, ids, carried, last)
    else:  # the structure of the other tags; the repeated entries copy their first occurrence's
        keep, groups = repeats
        keep = np.concatenate((np.arange(k), keep + k))
        kept_kind = kind[keep]
        kept_state, stack = _structure(kept_kind, sp, ids[keep[k:] - k], carried, last)
        state[keep] = kept_state
        for copies, first, size in groups:
            offsets = np.arange(k, k + size)
            state[copies[:, None] + offsets] = state[first + offsets]
        heads = np.concatenate([copies for copies, _, _ in groups]) + k
        # each repeated entry sits where an entry may: a child of a statement (an open tag at level 2)
        depths = _depths(kept_kind)
        before = np.searchsorted(keep, heads) - 1  # the kept tag just before it (the root's open at least)
        statements = np.flatnonzero((kept_kind == _OPEN) & (depths == 3))
        parent = np.searchsorted(statements, before, "right") - 1
        if ((depths[before] != 3).any() or (parent < 0).any()
                or (kept_state[statements[np.maximum(parent, 0)]] != _CONTAINER).any()):
            raise _Fallback
    if not last:
        if kind[-1] != _CLOSE or state[-1] != _STATES[_NTRY]:
            raise _Fallback
        st.stack = stack
    return _Tokens(words=words, lt=lt, gt=gt, kind=kind, spelling=np.concatenate((np.full(k, -1, np.int32), ids)),
                   state=state)


def _depths(kind: np.ndarray) -> np.ndarray:
    """The nesting depth after each tag."""
    return np.cumsum(kind, dtype=np.int32)


def _structure(kind: np.ndarray, sp: _Spellings, ids: np.ndarray, carried: tuple[np.ndarray, ...],
               last: bool) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
    """(the path state of every tag, the open elements at the end: (kind, qname, code) of the three levels
    above the entries) of a well-formed tag sequence (``kind``: the carried open elements, then the tags of
    spellings ``ids``); anything else raises _Fallback."""
    n, k = len(kind), len(carried[0])
    qname, code = np.empty(n, np.int32), np.empty(n, np.int16)
    for column, start_with, of_spelling in ((qname, carried[1], sp.qname), (code, carried[2], sp.code)):
        column[:k] = start_with
        np.take(of_spelling, ids, out=column[k:])
    depth = _depths(kind)
    level = (depth - (kind == _OPEN)).astype(np.int16)  # int16: numpy sorts it by radix
    if level.min() < 0 or level.max() > _MAX_LEVEL:
        raise _Fallback
    roots = np.flatnonzero(level == 0)
    if kind[0] != _OPEN or (len(roots) > 1 and (roots.tolist() != [0, n - 1] or not last)):
        raise _Fallback
    if depth[-1] != (0 if last else 3):
        raise _Fallback  # unclosed at the end, or a chunk not cut after an entry
    # by level, in document order within a level: a close tag follows its open tag
    order = np.argsort(level, kind="stable")
    sorted_kind = kind[order]
    closes = np.flatnonzero(sorted_kind == _CLOSE)
    if len(closes) and (closes[0] == 0 or (sorted_kind[closes - 1] != _OPEN).any()
                        or (qname[order[closes - 1]] != qname[order[closes]]).any()):
        raise _Fallback
    # parent: the open tag just before (a first child), else the parent of the one before on the same level
    after_open = np.empty(n, bool)
    after_open[0] = False
    np.equal(kind[:-1], _OPEN, out=after_open[1:])
    first_child = after_open[order] & (sorted_kind != _CLOSE)
    filled = np.maximum.accumulate(np.where(first_child, np.arange(n), 0))
    parent = order[filled] - 1  # (level 0 has none)
    bounds = np.concatenate(([0], np.cumsum(np.bincount(level))))
    state = np.zeros(n, np.int16)
    top = order[bounds[0]:bounds[1]]
    state[top] = _NEXT[_START].take(code[top])
    for lv in range(1, len(bounds) - 1):
        seg = slice(bounds[lv], bounds[lv + 1])
        at = order[seg]
        state[at] = _NEXT_FLAT.take(state.take(parent[seg]).astype(np.intp) * _NEXT.shape[1] + code.take(at))
    expected = _EXPECTED.take(code)
    if ((expected >= 0) & (state != expected)).any() or (kind[state == _CONTAINER] == _EMPTY).any():
        raise _Fallback
    if last:
        return state, None
    stack = [order[bounds[lv]:bounds[lv + 1]] for lv in range(3)]
    opened = np.array([seg[sorted_kind[bounds[lv]:bounds[lv + 1]] == _OPEN][-1] for lv, seg in enumerate(stack)])
    return state, (kind[opened], qname[opened], code[opened])


def _repeats(ids: np.ndarray, kind: np.ndarray, code_of: np.ndarray) -> tuple[np.ndarray, list] | None:
    """Entries that repeat an earlier entry of the chunk tag for tag (the same spellings in the same order, as
    machine-written statements mostly do): (positions in ``ids`` of the tags outside them, and per group of
    equal entries (the ``Ntry`` open tags of the repeats, the first entry's, their number of tags)); None if no
    entry repeats. Their structure is their first occurrence's, so only that one is worked out. Entries are
    grouped by their length and two sums of their spelling ids (one weighted by position), and each is then
    compared tag for tag with the first of its group."""
    ntry = np.flatnonzero(code_of.take(ids) == _CODE["Ntry"])
    marks = kind[ntry]
    if len(ntry) < 4 or len(ntry) % 2 or (marks[0::2] != _OPEN).any() or (marks[1::2] != _CLOSE).any():
        return None  # (Ntry inside Ntry, empty or unclosed Ntry: the general way finds out what it is)
    opens, closes = ntry[0::2], ntry[1::2]
    length = closes - opens + 1
    mixed = np.cumsum(ids.astype(np.uint64) * _MIX[1])
    weighted = np.cumsum(mixed)
    before = np.maximum(opens - 1, 0)
    mixed_before = np.where(opens > 0, mixed[before], np.uint64(0))
    total = mixed[closes] - mixed_before
    total_weighted = (weighted[closes] - np.where(opens > 0, weighted[before], np.uint64(0))
                      - length.astype(np.uint64) * mixed_before)
    order = np.lexsort((total_weighted, total, length))
    new = np.ones(len(order) + 1, bool)
    new[1:-1] = ((length[order[1:]] != length[order[:-1]]) | (total[order[1:]] != total[order[:-1]])
                 | (total_weighted[order[1:]] != total_weighted[order[:-1]]))
    bounds = np.flatnonzero(new)
    groups, heads = [], []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if b - a < 2:
            continue
        first, rest = order[a], order[a + 1:b]  # lexsort keeps document order within a group
        offsets = np.arange(length[first])
        same = rest[(ids[opens[rest][:, None] + offsets] == ids[opens[first] + offsets]).all(axis=1)]
        if len(same):
            groups.append((opens[same], opens[first], len(offsets)))
            heads.append(opens[same])
    if not groups:
        return None
    heads = np.sort(np.concatenate(heads))
    inside = np.zeros(len(ids) + 1, np.int8)
    inside[heads] += 1
    inside[closes[np.searchsorted(opens, heads)] + 1] -= 1  # (an entry may end right before the next one)
    return np.flatnonzero(np.cumsum(inside[:-1], dtype=np.int8) == 0), groups


# ---- fields: the first element of a path in each statement, balance, entry or split ---------------------------

_UNCLEAN = f"^{SPACE}|{SPACE}$|{NEEDS_FOLD}"  # what base.clean would change in a value
_SPLIT_PATH = "/".join(f"{{*}}{name}" for name in camt.SPLITS)
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_comments=True, remove_pis=True)


class _Fields:
    """The picked elements of a chunk by path, their texts (as lxml gives them, and cleaned) and source lines."""

    def __init__(self, st: _State, buf: bytes, breaks: np.ndarray, tok: _Tokens):
        self.buf, self.tok, self.line_base = buf, tok, st.line_base
        picked = np.flatnonzero(_PICKED.take(tok.state) & (tok.kind != _CLOSE))
        states = tok.state[picked]
        order = np.argsort(states, kind="stable")
        self.picked, states = picked[order], states[order]  # by state, each in document order
        self.bounds = np.searchsorted(states, np.arange(len(_PICKED) + 1))
        self.openers = {scope: self.picked[self.bounds[s]:self.bounds[s + 1]] for scope, s in _SCOPE_OPENER.items()}
        self.item = np.zeros(len(picked), np.int64)  # the scope item (statement, balance, entry, split) of each
        scope_of = _SCOPE_OF.take(states)
        for i, scope in enumerate(_SCOPES):
            at = np.flatnonzero(scope_of == i)
            self.item[at] = np.searchsorted(self.openers[scope], self.picked[at], "right") - 1
        self.breaks = breaks
        self.breaks_total = len(self.breaks)
        self.currencies = pl.Series(st.spellings.currencies, dtype=pl.String)
        self.ccys = np.append(st.spellings.ccy, 0)  # Ccy id of each spelling; -1 (a carried element): none
        self.rank: np.ndarray | None = None

    def items(self, path: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The elements at ``path`` (document order) and the item of their scope each belongs to."""
        a, b = self.bounds[_STATES[path]], self.bounds[_STATES[path] + 1]
        return self.picked[a:b], self.item[a:b]

    def size(self, path: tuple[str, ...]) -> int:
        return len(self.openers[_FIELDS[path]])

    def first(self, path: tuple[str, ...]) -> np.ndarray:
        """Per item of the path's scope: its first element at ``path`` (-1: none), what ``find`` finds."""
        tokens, items = self.items(path)
        out = np.full(self.size(path), -1, np.int64)
        if len(tokens):
            first = np.concatenate(([True], items[1:] != items[:-1]))
            out[items[first]] = tokens[first]
        return out

    def count(self, path: tuple[str, ...]) -> np.ndarray:
        return np.bincount(self.items(path)[1], minlength=self.size(path))

    def line(self, tokens: np.ndarray) -> np.ndarray:
        """lxml's sourceline of these elements: the line of the '>' that ends the start tag, below line 65535.
        From there libxml2 keeps no line for an element (16 bits) and ``xmlGetLineNo`` reports the line of its
        first text, looked for through first children down to depth 3 (deeper: 65535); a text's line is the
        line of the '<' after it (checked against lxml in the tests). An element without children on that way
        (where the siblings would decide) is left to the reference: _Fallback."""
        tok = self.tok
        lines = self.line_base + 1 + np.searchsorted(self.breaks, tok.gt[tokens])
        big = np.flatnonzero(lines >= _BIG_LINE)
        if len(big):
            found = np.full(len(big), _BIG_LINE, np.int64)
            at, todo = tokens[big], np.arange(len(big))
            for _depth in range(4):
                if (tok.kind[at] != _OPEN).any():
                    raise _Fallback
                text = tok.lt[at + 1] > tok.gt[at] + 1  # a text before the next tag: the first child
                found[todo[text]] = self.line_base + 1 + np.searchsorted(self.breaks, tok.lt[at[text] + 1])
                at, todo = at[~text] + 1, todo[~text]
                if (tok.kind[at] == _CLOSE).any():
                    raise _Fallback
            lines[big] = found
        return lines

    def ccy(self, tokens: np.ndarray) -> pl.Series:
        """The Ccy attribute of each element (NULL: none, empty, or no element)."""
        ids = np.where(tokens >= 0, self.ccys[self.tok.spelling[np.maximum(tokens, 0)]], 0)
        return self.currencies.gather(pl.Series(ids).set(pl.Series(ids == 0), None))

    def _read(self) -> None:
        """The texts of all elements whose text is read: Arrow string views over the chunk (in document order,
        so their offsets ascend), decoded and cleaned where they need it."""
        tok = self.tok
        marked = np.zeros(len(tok.kind) + 1, bool)  # the last one stands for -1, no element
        marked[:-1] = _READ.take(tok.state) & (tok.kind == _OPEN)
        unique = np.flatnonzero(marked)
        self.rank = np.cumsum(marked) - 1  # position of an element's text (see below for the others)
        texts = _views(self.buf, tok.words, tok.gt[unique] + 1, tok.lt[unique + 1])
        if b"&" in self.buf or b"\r" in self.buf:
            texts = where(texts, texts.str.contains("[&\r]"),
                          lambda v: v.map_elements(_unescape, return_dtype=pl.String))
        decoded = texts
        cleaned = where(decoded, decoded.str.contains(_UNCLEAN),
                        lambda v: v.str.replace_all(SPACE + "+", " ").str.strip_chars(PY_SPACE))
        none = pl.Series([None], dtype=pl.String)  # at the end: what elements without a text point at
        self.decoded, self.cleaned = decoded.append(none), cleaned.set(cleaned == "", None).append(none)
        self.rank[~marked] = len(unique)

    def texts(self, columns: dict[str, np.ndarray], raw: tuple[str, ...] = ()) -> dict[str, pl.Series]:
        """The text of each element (-1: NULL): cleaned as ``base.clean`` does, or as lxml's ``.text`` for the
        ``raw`` columns (amounts). An empty element has no text."""
        if self.rank is None:
            self._read()
        out = {}
        for k, tokens in columns.items():  # no such element anywhere in the chunk (most optional fields)
            if not len(tokens) or tokens.max() < 0:
                out[k] = pl.repeat(None, len(tokens), dtype=pl.String, eager=True)
        for source, keys in ((self.cleaned, [k for k in columns if k not in raw and k not in out]),
                             (self.decoded, [k for k in raw if k not in out])):
            if not keys:
                continue
            tokens = np.concatenate([columns[k] for k in keys])
            picked = source.gather(self.rank[tokens])
            at = 0
            for k in keys:
                out[k] = picked.slice(at, len(columns[k]))
                at += len(columns[k])
        return out


# ---- statements: account, balances (Python, a few per statement) ----------------------------------------------

@dataclass
class _Statements:
    contexts: list[_Statement]
    closes: np.ndarray  # per statement item: its close tag (-1: still open)
    rejected: list[tuple[int, Rejected]]  # (tag, record) of bad balances, numbered from 1


def _statements(st: _State, f: _Fields, tok: _Tokens) -> _Statements:
    openers = f.openers["container"]
    n = len(openers)
    closes = np.full(n, -1, np.int64)
    closing = np.flatnonzero((tok.state == _CONTAINER) & (tok.kind == _CLOSE))
    closes[np.searchsorted(openers, closing) - 1] = closing
    ids, n_ids = f.first(("Id",)), f.count(("Id",))
    accts, n_accts = f.first(("Acct",)), f.count(("Acct",))
    first_entry = f.first(_NTRY)
    first_entry[first_entry < 0] = np.iinfo(np.int64).max
    bals, bal_of = f.items(_BAL)
    texts = f.texts({"id": ids, "iban": f.first(("Acct", "Id", "IBAN")), "othr": f.first(("Acct", "Id", "Othr", "Id")),
                     "ccy": f.first(("Acct", "Ccy"))})
    statement_ids, ibans, others, currencies = (texts[k].to_list() for k in ("id", "iban", "othr", "ccy"))
    contexts = []
    for i in range(n):
        if tok.lt[openers[i]] < 0:  # carried from the last chunk, which ended after one of its entries
            if n_ids[i] or n_accts[i] or (bal_of == i).any() or st.statement is None:
                raise _Fallback
            contexts.append(st.statement)
            continue
        account = ibans[i] or others[i]
        if (n_accts[i] != 1 or account is None or accts[i] > first_entry[i] or n_ids[i] > 1
                or (n_ids[i] and ids[i] > accts[i])):
            raise _Fallback  # the reference rejects its entries or the file, or reads the Id at Acct's end
        contexts.append(_Statement(account=account, currency=currencies[i], statement_id=statement_ids[i]))
    rejected = []
    if len(bals):
        if ((bals < accts[bal_of]) | (bals > first_entry[bal_of])).any():
            raise _Fallback  # a balance before Acct or after an entry
        rejected = _balances(st, f, bals, bal_of, contexts)
    st.statement = contexts[-1] if n and closes[-1] < 0 else None
    return _Statements(contexts=contexts, closes=closes, rejected=rejected)


def _balances(st: _State, f: _Fields, bals: np.ndarray, bal_of: np.ndarray,
              contexts: list[_Statement]) -> list[tuple[int, Rejected]]:
    """Each ``Bal`` through ``camt.balance``, in document order."""
    if (f.count((*_BAL, "Dt")) > 1).any():
        raise _Fallback  # the reference reads the first Dt's Dt or DtTm
    amounts = f.first((*_BAL, "Amt"))
    texts = f.texts({"code": f.first((*_BAL, "Tp", "CdOrPrtry", "Cd")), "amount": amounts,
                     "ind": f.first((*_BAL, "CdtDbtInd")), "dt": f.first((*_BAL, "Dt", "Dt")),
                     "dttm": f.first((*_BAL, "Dt", "DtTm"))}, raw=("amount",))
    columns = [texts[k].to_list() for k in ("code", "amount", "ind", "dt", "dttm")]
    ccys = f.ccy(amounts).to_list()
    rejected = []
    for b, (tag, of, line) in enumerate(zip(bals.tolist(), bal_of.tolist(), f.line(bals).tolist(), strict=True)):
        code, amount, indicator, date, date_time = (c[b] for c in columns)
        if amounts[b] >= 0 and amount is None:
            amount = ""  # an empty Amt
        ctx = contexts[of]
        item = camt.balance(code, amount, indicator, date or date_time, ccys[b] or ctx.currency or "", line, st.name, 1)
        if isinstance(item, Rejected):
            rejected.append((tag, item))
        elif item is not None:
            ctx.balances[item[0]] = item[1]
    return rejected


# ---- entries: typed and checked with polars -------------------------------------------------------------------

_PLAIN_AMOUNT = r"^[0-9]{1,18}(\.[0-9]{1,5})?$"  # DECIMAL(23, 5) holds it exactly; anything else: reference
_PLAIN_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"  # date.fromisoformat of the first ten characters takes it alike
_INDICATORS = ("CRDT", "DBIT")
_MONEY = pl.Decimal(23, 5)


def _date(dt_text: str, dttm_text: str) -> tuple[pl.Expr, pl.Expr]:
    """(the date of ``Dt`` or else ``DtTm``, whether the fast path takes it: none, or a plain valid date)."""
    raw = pl.coalesce(dt_text, dttm_text)
    value = raw.str.slice(0, 10).str.strptime(pl.Date, "%Y-%m-%d", strict=False)
    ok = raw.is_null() | (raw.str.contains(_PLAIN_DATE) & value.is_not_null() & (value.dt.year() >= 1))
    return value, ok.fill_null(False)


@dataclass
class _Entries:
    tokens: np.ndarray  # the Ntry tags
    statement: np.ndarray  # statement item of each
    lines: np.ndarray
    plain: np.ndarray  # bool
    counts: np.ndarray  # records of each plain entry (odd ones: filled in by _write)
    rows: pl.DataFrame  # one per record of the plain entries: entry, offset (1-based) and the raw columns
    split_entry: np.ndarray  # the entry of each TxDtls (ascending)
    split_line: np.ndarray  # the source line of each TxDtls

    def split_lines(self, entry: int) -> list[int]:
        a, b = np.searchsorted(self.split_entry, [entry, entry + 1])
        return self.split_line[a:b].tolist()


def _entries(f: _Fields, stm: _Statements) -> _Entries:
    entries = f.openers["entry"]
    n = len(entries)
    statement = np.searchsorted(f.openers["container"], entries, "right") - 1
    lines = f.line(entries)
    txs, tx_entry = f.items(_TX)
    n_tx = np.bincount(tx_entry, minlength=n)
    e_amount = f.first((*_NTRY, "Amt"))
    e_paths = {"ind": ("CdtDbtInd",), "sts": ("Sts",), "sts_cd": ("Sts", "Cd"), "bk_dt": ("BookgDt", "Dt"),
               "bk_dttm": ("BookgDt", "DtTm"), "vd_dt": ("ValDt", "Dt"), "vd_dttm": ("ValDt", "DtTm"),
               "rvsl": ("RvslInd",), "asr": ("AcctSvcrRef",), "nref": ("NtryRef",), "addtl": ("AddtlNtryInf",)}
    texts = f.texts({"amount": e_amount, **{k: f.first((*_NTRY, *p)) for k, p in e_paths.items()}}, raw=("amount",))
    accounts = pl.Series([c.account for c in stm.contexts], dtype=pl.String)
    currencies = pl.Series([c.currency for c in stm.contexts], dtype=pl.String)
    booking, booking_ok = _date("bk_dt", "bk_dttm")
    value_date, value_ok = _date("vd_dt", "vd_dttm")
    e = pl.DataFrame({
        **texts, "has_amount": e_amount >= 0, "n_tx": n_tx, "line": lines,
        "n_dates": np.maximum(f.count((*_NTRY, "BookgDt")), f.count((*_NTRY, "ValDt"))),
        "own_account": accounts.gather(statement), "statement_currency": currencies.gather(statement),
        "amount_ccy": f.ccy(e_amount), "statement": statement,
    }).lazy().with_columns(
        currency=pl.coalesce("amount_ccy", "statement_currency"),
        status=pl.coalesce("sts_cd", "sts", pl.lit(camt.BOOKED)),
        booking_date=pl.coalesce(booking, value_date), value_date=value_date,
        is_reversal=(pl.col("rvsl").str.to_lowercase() == "true").fill_null(False),
        entry_ref=pl.coalesce("asr", "nref"), dates_ok=booking_ok & value_ok,
    ).with_columns(
        ok=(pl.col("has_amount") & pl.col("amount").str.contains(_PLAIN_AMOUNT).fill_null(False)
            & pl.col("currency").is_not_null() & pl.col("dates_ok") & pl.col("booking_date").is_not_null()
            & (pl.col("n_dates") <= 1) & ((pl.col("n_tx") > 0) | pl.col("ind").is_in(_INDICATORS).fill_null(False)))
    ).collect(engine="in-memory")
    tx_lines = f.line(txs)
    t = _splits(f, txs, tx_entry, tx_lines, e)
    bad_tx = np.bincount(tx_entry[~t["ok"].to_numpy()], minlength=n) > 0
    plain = e["ok"].to_numpy() & ~bad_tx
    counts = np.where(plain, np.maximum(n_tx, 1), 0)
    keep = ["entry", "offset", "statement", "source_line", "own_account", "booking_date", "value_date", "amount",
            "currency", "counterparty_name", "counterparty_tax_id", "counterparty_account", "counterparty_bic",
            "purpose", "bank_reference", "end_to_end_id", "status", "is_reversal"]
    no_splits = e.lazy().with_row_index("entry").filter(pl.col("ok") & (pl.col("n_tx") == 0)).with_columns(
        offset=pl.lit(1, pl.Int64), source_line=pl.col("line"),
        amount=_signed("amount", "ind"), counterparty_name=pl.lit(None, pl.String),
        counterparty_tax_id=pl.lit(None, pl.String), counterparty_account=pl.lit(None, pl.String),
        counterparty_bic=pl.lit(None, pl.String), purpose=pl.col("addtl"), bank_reference=pl.col("entry_ref"),
        end_to_end_id=pl.lit(None, pl.String)).select(keep).with_columns(pl.col("entry").cast(pl.Int64))
    splits = t.lazy().filter(pl.Series(plain[tx_entry])).select(keep)
    rows = pl.concat([no_splits, splits], how="vertical_relaxed").collect(engine="in-memory")
    return _Entries(tokens=entries, statement=statement, lines=lines, plain=plain, counts=counts, rows=rows,
                    split_entry=tx_entry, split_line=tx_lines)


def _gather(frame: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    """``frame[rows]``, without the copy when rows are 0, 1, 2, ... (one split per entry, the usual case)."""
    if len(rows) == frame.height and (not len(rows) or (rows[-1] == len(rows) - 1 and (np.diff(rows) == 1).all())):
        return frame
    return frame[rows]


def _signed(amount: str, indicator: str) -> pl.Expr:
    value = pl.col(amount).cast(_MONEY, strict=False)  # NULL for rows that are not plain (not loaded)
    return pl.when(pl.col(indicator) == "DBIT").then(-value).otherwise(value)


def _splits(f: _Fields, txs: np.ndarray, tx_entry: np.ndarray, tx_lines: np.ndarray, e: pl.DataFrame) -> pl.DataFrame:
    """One row per ``TxDtls``: the reference's choices (amount, side by sign, names, purposes, references)."""
    first = {path: f.first((*_TX, *path)) for path in (p for p in _TX_PATHS if p != ("RmtInf", "Ustrd"))}
    side_paths = {"name": (("Nm",), ("Pty", "Nm")), "org": (("Id", "OrgId", "Othr", "Id"),
                                                           ("Pty", "Id", "OrgId", "Othr", "Id"))}
    columns = {"amount1": first[("Amt",)], "amount2": first[("AmtDtls", "TxAmt", "Amt")],
               "tx_ind": first[("CdtDbtInd",)], "ref": first[("RmtInf", "Strd", "CdtrRefInf", "Ref")],
               "addtl_tx": first[("AddtlTxInf",)], "e2e": first[("Refs", "EndToEndId")],
               "tx_asr": first[("Refs", "AcctSvcrRef")]}
    counts = {}
    for side, acct, agent in _SIDES:
        for key, (direct, under_pty) in side_paths.items():
            columns[f"{side}_{key}1"] = first[("RltdPties", side, *direct)]
            columns[f"{side}_{key}2"] = first[("RltdPties", side, *under_pty)]
        columns[f"{side}_iban"] = first[("RltdPties", acct, "Id", "IBAN")]
        columns[f"{side}_othr"] = first[("RltdPties", acct, "Id", "Othr", "Id")]
        columns[f"{side}_bicfi"] = first[("RltdAgts", agent, "FinInstnId", "BICFI")]
        columns[f"{side}_bic"] = first[("RltdAgts", agent, "FinInstnId", "BIC")]
        n_org = f.count((*_TX, "RltdPties", side, "Id", "OrgId"))
        counts[f"{side}_has_org"] = n_org > 0
        counts[f"{side}_orgs_ok"] = (n_org <= 1) & (f.count((*_TX, "RltdPties", side, "Pty", "Id", "OrgId")) <= 1)
    ustrd, ustrd_of = f.items((*_TX, "RmtInf", "Ustrd"))
    texts = f.texts({**columns, "ustrd": ustrd}, raw=("amount1", "amount2"))
    unstructured = pl.DataFrame({"tx": ustrd_of, "text": texts.pop("ustrd")}).drop_nulls()
    if unstructured["tx"].is_duplicated().any():  # several Ustrd in a split: joined with a space
        unstructured = unstructured.group_by("tx", maintain_order=True).agg(pl.col("text").str.join(" "))
    at = np.full(len(txs), -1, np.int64)
    at[unstructured["tx"].to_numpy()] = np.arange(unstructured.height)
    index = np.arange(len(txs)) - np.searchsorted(tx_entry, tx_entry) + 1  # 1-based within the entry
    entry_columns = ("amount", "ind", "currency", "n_tx", "own_account", "statement", "booking_date", "value_date",
                     "status", "is_reversal", "entry_ref", "addtl")
    t = pl.DataFrame({
        **texts, **counts, "entry": tx_entry, "offset": index, "source_line": tx_lines,
        "has1": columns["amount1"] >= 0, "has2": columns["amount2"] >= 0,
        "ccy1": f.ccy(columns["amount1"]), "ccy2": f.ccy(columns["amount2"]),
        "text": unstructured["text"].gather(pl.Series(at).set(pl.Series(at < 0), None)),
    }).hstack(_gather(e.select(pl.col(c).alias(f"e_{c}") for c in entry_columns), tx_entry)).lazy()
    amount = (pl.when("has1").then("amount1").when("has2").then("amount2")
              .when(pl.col("e_n_tx") == 1).then("e_amount"))
    t = t.with_columns(
        amount_text=amount, indicator=pl.coalesce("tx_ind", "e_ind"),
        currency=pl.coalesce(pl.when("has1").then("ccy1").when("has2").then("ccy2"), "e_currency"),
    ).with_columns(
        debit=(pl.col("indicator") == "DBIT") & (pl.col("amount_text").cast(_MONEY, strict=False) != 0),
        ok=(pl.col("amount_text").str.contains(_PLAIN_AMOUNT).fill_null(False)
            & pl.col("indicator").is_in(_INDICATORS).fill_null(False)),
        purpose=pl.concat_str("text", "ref", separator=" ", ignore_nulls=True),
    )

    def side(column: str) -> pl.Expr:  # the creditor's for a debit, else the debtor's
        return pl.when("debit").then(pl.col(f"Cdtr_{column}")).otherwise(pl.col(f"Dbtr_{column}"))

    e2e = pl.col("e2e")
    reference = pl.col("e_entry_ref")
    return t.with_columns(
        ok=pl.col("ok") & side("orgs_ok"),
        amount=_signed("amount_text", "indicator"),
        own_account="e_own_account", statement="e_statement", booking_date="e_booking_date",
        value_date="e_value_date", status="e_status", is_reversal="e_is_reversal",
        counterparty_name=pl.coalesce(side("name1"), side("name2")),
        counterparty_tax_id=pl.when(side("has_org")).then(side("org1")).otherwise(side("org2")),
        counterparty_account=pl.coalesce(side("iban"), side("othr")),
        counterparty_bic=pl.coalesce(side("bicfi"), side("bic")),
        purpose=pl.coalesce(pl.when(pl.col("purpose") != "").then("purpose"), "addtl_tx", "e_addtl"),
        bank_reference=pl.coalesce("tx_asr", pl.when(pl.col("e_n_tx") > 1).then(
            reference + "/" + pl.col("offset").cast(pl.String)).otherwise(reference)),
        end_to_end_id=pl.when(e2e != camt.NOT_PROVIDED).then(e2e),
    ).collect(engine="in-memory")


# ---- writing: record numbers, plain rows in one INSERT, odd entries through the reference code ---------------

_INSERT = ("INSERT INTO raw.bank_transaction BY NAME SELECT $file_hash AS file_hash, $source_file AS source_file, "
           "$reader AS reader, * FROM _camt_rows")
_COLUMNS = ("record_number", "source_line", "own_account", "booking_date", "value_date", "amount", "currency",
            "counterparty_name", "counterparty_tax_id", "counterparty_account", "counterparty_bic", "purpose",
            "bank_reference", "end_to_end_id", "status", "is_reversal")


def _write(st: _State, buf: bytes, f: _Fields, tok: _Tokens, stm: _Statements, ent: _Entries) -> None:
    counts = ent.counts.copy()
    odd = np.flatnonzero(~ent.plain)
    odd_records = {}
    if len(odd):
        closes = np.flatnonzero((tok.state == _STATES[_NTRY]) & (tok.kind == _CLOSE))
        for e in odd.tolist():
            opener = int(ent.tokens[e])
            end = int(tok.gt[opener] if tok.kind[opener] == _EMPTY else tok.gt[closes[np.searchsorted(closes, opener)]])
            ntry = etree.fromstring(st.wrapper + bytes(buf[int(tok.lt[opener]):end + 1]) + b"</w>", _PARSER)[0]
            ctx = stm.contexts[ent.statement[e]]
            lines = {ntry: int(ent.lines[e]), **dict(zip(ntry.iterfind(_SPLIT_PATH), ent.split_lines(e), strict=True))}
            odd_records[e] = list(camt.entry_records(ntry, st.name, 0, ctx.account, ctx.currency, lines.__getitem__))
            counts[e] = len(odd_records[e])
    # record numbers run through balances' rejections, entries and statement balances in document order
    balanced = [i for i, c in enumerate(stm.closes.tolist()) if c >= 0 and stm.contexts[i].balances]
    positions = np.concatenate((ent.tokens, np.array([t for t, _ in stm.rejected], np.int64),
                                stm.closes[balanced].astype(np.int64)))
    sizes = np.concatenate((counts, np.ones(len(stm.rejected) + len(balanced), np.int64)))
    order = np.argsort(positions, kind="stable")
    before = np.empty(len(order), np.int64)
    before[order] = np.cumsum(sizes[order]) - sizes[order] + st.record
    st.record += int(sizes.sum())
    n_e, n_r = len(ent.tokens), len(stm.rejected)

    rows = ent.rows.with_columns(record_number=before[ent.rows["entry"].to_numpy()] + ent.rows["offset"])
    st.written = st.written or bool(rows.height or odd_records or stm.rejected or balanced)
    if rows.height:
        st.con.register("_camt_rows", rows.select(
            pl.col("record_number", "source_line").cast(pl.Int32), *_COLUMNS[2:]).to_arrow())
        try:
            st.con.execute(_INSERT, st.params)
        finally:
            st.con.unregister("_camt_rows")
        st.loaded += rows.height
        booked = rows.filter(pl.col("status") == camt.BOOKED)
        statements = booked["statement"].unique()
        if len(statements) == 1:
            stm.contexts[statements[0]].total += booked["amount"].sum()
        else:
            for statement, total in booked.group_by("statement").agg(pl.col("amount").sum()).iter_rows():
                stm.contexts[statement].total += total
    for e, records in odd_records.items():
        for rec in records:
            rec.record_number += int(before[e])
            st.writer.add(rec)
            if isinstance(rec, BankTxn) and rec.status == camt.BOOKED:
                stm.contexts[ent.statement[e]].total += rec.amount
    for (_, rec), number in zip(stm.rejected, before[n_e:n_e + n_r].tolist(), strict=True):
        rec.record_number = number + 1
        st.writer.add(rec)
    for i, number in zip(balanced, before[n_e + n_r:].tolist(), strict=True):
        ctx = stm.contexts[i]
        st.writer.add(camt.statement_balance(ctx.balances, number + 1, ctx.account, ctx.statement_id, ctx.total))
