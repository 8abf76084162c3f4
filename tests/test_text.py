import pytest

from clientbase.errors import ParseError
from sources.text import decode

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
