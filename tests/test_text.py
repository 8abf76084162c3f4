import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clientbase.errors import ParseError
from sources.text import _cyrillic_share, _is_cyrillic, _run_share, _word_share, decode

RUSSIAN = "Оплата по счету № 15, ООО «Ромашка», в т.ч. НДС"
GERMAN = "Überweisung an Müller & Söhne, Straße 5"


@pytest.mark.parametrize(("data", "encoding", "expected"), [
    (RUSSIAN.encode("utf-8"), "utf-8-sig", RUSSIAN),
    (b"\xef\xbb\xbf" + RUSSIAN.encode("utf-8"), "utf-8-sig", RUSSIAN),
    (RUSSIAN.encode("cp1251"), "cp1251", RUSSIAN),
    (RUSSIAN.replace("«", '"').replace("»", '"').encode("cp866"), "cp866",
     RUSSIAN.replace("«", '"').replace("»", '"')),
    (GERMAN.encode("cp1252"), "cp1252", GERMAN),
])
def test_detection(data, encoding, expected):
    assert decode(data, "f") == (expected, encoding)


def test_replacement_characters_are_rejected():
    with pytest.raises(ParseError, match="already damaged"):
        decode("Ромашка \ufffd".encode(), "f")


def test_undecidable_cyrillic_is_not_guessed():
    # runs of high bytes that are symbols (°±µ¶·) in cp1251 and box drawing in cp866
    with pytest.raises(ParseError, match="neither UTF-8 nor clearly cp1251 or cp866"):
        decode(bytes([0xB0, 0xB1, 0xB5, 0xB6, 0xB7]) * 5, "f")


_LETTERS = [*"aZ9 .,", *map(chr, range(0x400, 0x460)), *"ÄéßЁ№«»–—…€😀\U00010400"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(_LETTERS), max_size=60))
def test_cyrillic_share_counts_characters(text):
    """The numpy count over UTF-16 code units is the share of Cyrillic among the non-ASCII characters."""
    high = sum(1 for c in text if ord(c) > 127)
    cyrillic = sum(1 for c in text if _is_cyrillic(c))
    assert _cyrillic_share(text) == (cyrillic / high if high else 1.0)


def test_cyrillic_share_of_a_mixed_line():
    # non-ASCII: Ё ж № « ü » 😀 (the emoji: two UTF-16 code units, one character); Cyrillic: all but ü and 😀
    assert _cyrillic_share("Ёж № «Müller» 😀") == 5 / 7


def _word_share_by_words(text: str) -> float:
    """The definition: Cyrillic runs of two letters or more, counted when the whole run is Capitalised, lower
    or UPPER case, over the non-ASCII characters."""
    high = sum(1 for c in text if ord(c) > 127)
    words = re.finditer(r"[А-яЁёІіЇїЄєҐґЎў]{2,}", text)
    good = sum(len(m.group()) for m in words if re.fullmatch(r"[А-ЯЁІЇЄҐЎ]?[а-яёіїєґў]+|[А-ЯЁІЇЄҐЎ]+", m.group()))
    return good / high if high else 0.0


def _run_share_by_bytes(data: bytes) -> float:
    high = [i for i, b in enumerate(data) if b > 127]
    return sum(1 for i in high if i - 1 in high or i + 1 in high) / len(high) if high else 0.0


_WORDY = [*"aZ .,1", *"АБВЯабвяЁёІіЇїЄєҐґЎў", *"─│┤╣", "😀"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(_WORDY), max_size=40))
def test_word_share_is_the_share_of_plausible_words(text):
    assert _word_share(text) == _word_share_by_words(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_run_share_is_the_share_of_high_bytes_next_to_another(data):
    assert _run_share(data) == _run_share_by_bytes(data)


def test_undeclared_cyrillic_is_told_apart_quickly():
    """cp1251 and cp866 samples of a megabyte are told apart (the checks run in numpy and one regex)."""
    line = "Оплата по счету № 15 от 01.03.2025, ООО «Ромашка», ИНН 7707083893, в т.ч. НДС 20%\r\n"
    for encoding in ("cp1251", "cp866"):
        sample = (line.replace("«", '"').replace("»", '"') * 12000).encode(encoding)[:1 << 20]
        assert decode(sample, "f")[1] == encoding
