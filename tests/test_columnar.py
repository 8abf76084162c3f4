import numpy as np
import polars as pl
import pytest

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


def _strptime(text):
    import datetime as dt

    try:
        return dt.datetime.strptime(text, "%d.%m.%Y").date()
    except ValueError:
        return None


def test_plain_dates_are_what_strptime_accepts_in_the_plain_shape():
    days, months = [f"{d:02d}" for d in range(0, 40)], [f"{m:02d}" for m in range(0, 14)]
    years = ["0000", "0001", "0999", "1900", "1970", "2000", "2023", "2024", "2100", "9999"]
    shaped = [f"{d}.{m}.{y}" for d in days for m in months for y in years]
    odd = [None, "", "1.3.2025", "01.3.2025", "01.03.25", "01-03-2025", "01.03.2025 ", " 1.03.2025", "0a.03.2025",
           "01.03.2O25", "31/12/2025", "01.03.20255", "a much longer text than twelve bytes", "Дата=01.03",
           "01.03.2025\t", "01.03.20é", "0:.03.2025", "01.03.202:", "01.03/2025", "01.03.20/5", "01.03.2\x00025"]
    values = pl.Series("d", shaped + odd)
    dates, plain = columnar.plain_dates(values)
    expected = [_strptime(t) for t in shaped] + [None] * len(odd)
    assert plain.tolist() == [e is not None for e in expected]
    assert dates.to_list() == expected
    assert dates.name == "d" and dates.dtype == pl.Date
    assert sum(plain) == 7 * 365 + 2 * 366  # every real day of the nine years from 1 on (2000 and 2024 leap)
    assert values.to_list() == shaped + odd  # the input is left as it was


def test_plain_dates_of_nothing_and_of_a_slice():
    dates, plain = columnar.plain_dates(pl.Series("d", [], pl.String))
    assert dates.to_list() == [] and plain.tolist() == []
    values = pl.Series(["x", "01.03.2025", None, "31.12.1999", "31.11.1999"]).slice(1, 4)  # views from an offset
    dates, plain = columnar.plain_dates(values)
    assert plain.tolist() == [True, False, True, False]
    assert [str(d) if d else d for d in dates.to_list()] == ["2025-03-01", None, "1999-12-31", None]


def test_transcode_blockwise_equals_whole_and_names_the_bad_byte(monkeypatch):
    import codecs

    text = "Оплата «по счёту» № 15 — ООО Ромашка\r\n" * 50
    for encoding in ("cp1251", "utf-8", "cp866"):
        data = text.encode(encoding) if encoding != "cp866" else text.replace("«", '"').replace("»", '"').replace(
            "—", "-").replace("№", "N").encode(encoding)
        for block in (1, 2, 5, 1 << 18):
            monkeypatch.setattr(columnar, "TRANSCODE_BLOCK", block)
            got = columnar.transcode(b"carried\n", data, codecs.getincrementaldecoder(encoding)(), final=True)
            assert bytes(got) == b"carried\n" + data.decode(encoding).encode("utf-8")
    bad = bytearray("Счёт №1\n".encode() * 10)
    bad[43] = 0xFF  # the second byte of the fourth line's first letter
    with pytest.raises(UnicodeDecodeError) as whole:
        bytes(bad).decode("utf-8")
    assert (whole.value.start, whole.value.reason) == (42, "invalid continuation byte")
    for block in (1, 3, 4, 1 << 18):
        monkeypatch.setattr(columnar, "TRANSCODE_BLOCK", block)
        with pytest.raises(UnicodeDecodeError) as info:
            columnar.transcode(b"", bad, codecs.getincrementaldecoder("utf-8")(), final=True)
        assert (info.value.start, info.value.reason) == (42, "invalid continuation byte")
    truncated = "Счёт".encode()[:-1]  # a character cut at the end: an error only when final
    monkeypatch.setattr(columnar, "TRANSCODE_BLOCK", 2)
    decoder = codecs.getincrementaldecoder("utf-8")()
    assert bytes(columnar.transcode(b"", truncated, decoder, final=False)) == "Счё".encode()
    assert bytes(columnar.transcode(b"", "т".encode()[1:], decoder, final=True)) == "т".encode()
    with pytest.raises(UnicodeDecodeError) as info:
        columnar.transcode(b"", truncated, codecs.getincrementaldecoder("utf-8")(), final=True)
    assert info.value.start == 6 and info.value.reason == "unexpected end of data"
    decoder = codecs.getincrementaldecoder("utf-8")()
    columnar.transcode(b"", truncated, decoder, final=False)
    with pytest.raises(UnicodeDecodeError, match="unexpected end of data"):  # no more bytes: the cut one is bad
        columnar.transcode(b"", b"", decoder, final=True)
