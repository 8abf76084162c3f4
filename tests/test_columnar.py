import numpy as np
import polars as pl

from sources import columnar
from sources.base import clean


def test_whitespace_set_is_pythons():
    assert columnar.PY_SPACE == "".join(c for c in map(chr, range(0x110000)) if c.isspace())


def test_line_ends_are_pythons_universal_newlines():
    for text in ("a\r\nbb\nc\rd", "a\r\n", "", "x", "\r\r\n\n", "a\rb\r"):
        buf = text.encode()
        ends = columnar.line_ends(np.frombuffer(buf, np.uint8), buf)
        starts = [0, *ends[:-1]]
        assert [buf[s:e].decode() for s, e in zip(starts, ends, strict=True)] == (text.splitlines(keepends=True)
                                                                                 or [""])


def test_where_changes_only_the_rows_asked_and_not_its_input():
    values = pl.Series(["a", "b", None, "d"])
    changed = columnar.where(values, pl.Series([True, None, False, True]), lambda v: v.str.to_uppercase())
    assert changed.to_list() == ["A", "b", None, "D"]
    assert values.to_list() == ["a", "b", None, "d"]


def test_folded_is_clean_of_stripped_values():
    texts = ["a  b", "a\x1cb", "a\u3000\u2000b", "plain", "", "x\ty\nz"]
    assert columnar.folded(pl.Series(texts)).to_list() == [clean(t) for t in texts]


def test_string_heads_read_length_and_first_bytes_from_the_views():
    values = pl.Series(["", "a", "12", "abcdefghijkl", "abcdefghijklm", "\u20ac" * 5, None, "x" * 100])
    values = values.slice(1)  # an offset into the views
    length, head = columnar.string_heads(values)
    assert length.tolist() == [1, 2, 12, 13, 15, 0, 100]
    assert [bytes(h[:min(n, 4)]) for n, h in zip(length, head, strict=True)] == [
        b"a", b"12", b"abcd", b"abcd", "\u20ac".encode() + b"\xe2", b"", b"xxxx"]


def test_line_ends_with_lone_cr_after_crlf():
    for text in ("\r\n\r", "a\r\r\nb", "\n\r", "\rx\r\n"):
        buf = text.encode()
        ends = columnar.line_ends(np.frombuffer(buf, np.uint8), buf)
        assert [buf[s:e].decode() for s, e in zip([0, *ends[:-1]], ends, strict=True)] == text.splitlines(True)
