"""Turning a statement's bytes into text without guessing silently.

UTF-8 (with or without BOM) is taken as is. Anything else must be one of the single-byte encodings banks in
our markets use, and the rule that picks it is deterministic and explained:

- Cyrillic text (cp1251 / cp866) shows up as *runs* of high bytes (whole words), while Western text
  (cp1252: German umlauts, Scandinavian and Baltic letters) shows *isolated* high bytes inside Latin words;
- between cp1251 and cp866 the right one reads as plausible Cyrillic words (case patterns intact); the wrong
  one breaks words with box-drawing characters and symbols.

If the rule cannot decide, the file is rejected with a message asking for a UTF-8 export. A file that
already contains U+FFFD replacement characters was mangled by an earlier conversion and is rejected.
The encoding used is returned so the manifest records it.
"""

from __future__ import annotations

import re

import numpy as np

from clientbase.errors import ParseError

REPLACEMENT_UTF8 = "\ufffd".encode()
_CYRILLIC_EXTRA = set("ЁёІіЇїЄєЎўҐґ№«»–—…")


def _is_cyrillic(ch: str) -> bool:
    return "\u0410" <= ch <= "\u044f" or ch in _CYRILLIC_EXTRA


_CYRILLIC_CODES = np.zeros(1 << 16, bool)  # by UTF-16 code unit: is it a character ``_is_cyrillic`` takes
_CYRILLIC_CODES[0x410:0x450] = True
_CYRILLIC_CODES[[ord(c) for c in _CYRILLIC_EXTRA]] = True


def _units(text: str) -> np.ndarray:
    """The UTF-16 code units of a text (a character beyond the BMP is two, the second a low surrogate)."""
    return np.frombuffer(text.encode("utf-16-le", "surrogatepass"), np.uint16)


def _non_ascii(units: np.ndarray) -> int:
    """The number of non-ASCII characters of a text given as its UTF-16 code units."""
    return np.count_nonzero(units > 127) - np.count_nonzero((units >= 0xDC00) & (units <= 0xDFFF))


def _cyrillic_share(text: str) -> float:
    """Share of the non-ASCII characters that are Cyrillic (``_is_cyrillic``), counted by numpy."""
    units = _units(text)
    high = _non_ascii(units)
    return np.count_nonzero(_CYRILLIC_CODES[units]) / high if high else 1.0


_UPPER, _LOWER = "А-ЯЁІЇЄҐЎ", "а-яёіїєґў"  # the letters of the Cyrillic alphabets in our markets
_LETTER = f"[{_UPPER}{_LOWER}]"
# a whole word (no letter right before or after it) of two letters or more, in a plausible case pattern:
# Capitalised, lower case or UPPER CASE
_PLAUSIBLE_WORD = re.compile(
    f"(?<!{_LETTER})(?:[{_UPPER}][{_LOWER}]+|[{_LOWER}]{{2,}}|[{_UPPER}]{{2,}})(?!{_LETTER})")


def _word_share(text: str) -> float:
    """Share of non-ASCII characters that sit in plausible Cyrillic words (Capitalised, lower or UPPER case).

    Text decoded with the wrong Cyrillic code page breaks words with box-drawing characters and symbols and
    mixes cases inside words, so this tells cp1251 from cp866 where letter counts alone do not.
    """
    high = _non_ascii(_units(text))
    return sum(map(len, _PLAUSIBLE_WORD.findall(text))) / high if high else 0.0


def _run_share(data: bytes) -> float:
    """Share of high bytes that sit next to another high byte (words of non-Latin script)."""
    high = np.frombuffer(data, np.uint8) > 127
    count = np.count_nonzero(high)
    if not count:
        return 0.0
    neighbour = np.zeros(len(high), bool)
    neighbour[1:] |= high[:-1]
    neighbour[:-1] |= high[1:]
    return np.count_nonzero(high & neighbour) / count


SAMPLE_BYTES = 1 << 20


def detect(sample: bytes, path: str, *, declared: str | None = None) -> str:
    """The encoding of a file from its first bytes. ``declared`` (a 1C header) is verified, not trusted."""
    if REPLACEMENT_UTF8 in sample:
        raise ParseError("the file contains U+FFFD replacement characters: it was already damaged by a "
                         "wrong encoding conversion; export it again from the bank", path=path)
    if declared is not None:
        try:
            text = _decode_prefix(sample, declared)
        except UnicodeDecodeError as exc:
            raise ParseError(f"the file declares encoding {declared} but byte {exc.start} is not valid in it",
                             path=path) from None
        if declared in ("cp1251", "cp866") and _cyrillic_share(text) < 0.9:
            raise ParseError(f"the file declares {declared} but its text does not read as Cyrillic in it; "
                             "check the export settings", path=path)
        return declared
    try:
        _decode_prefix(sample, "utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError:
        pass
    if _run_share(sample) >= 0.6:
        scored = sorted(((_word_share(sample.decode(enc, errors="replace")), enc)
                         for enc in ("cp1251", "cp866")), reverse=True)
        (best, enc), (other, _) = scored
        if best >= 0.3 and best >= 2 * other and _cyrillic_share(sample.decode(enc, errors="replace")) >= 0.9:
            return enc
        raise ParseError("the file is neither UTF-8 nor clearly cp1251 or cp866 Cyrillic; export it as UTF-8",
                         path=path)
    try:
        sample.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise ParseError(f"byte {exc.start} is not valid UTF-8 or cp1252; export the file as UTF-8",
                         path=path) from None
    return "cp1252"


def _decode_prefix(sample: bytes, encoding: str) -> str:
    """Decode a sample that may end inside a multi-byte character."""
    try:
        return sample.decode(encoding)
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 3 and encoding.startswith("utf"):
            return sample[: exc.start].decode(encoding)
        raise


def decode(data: bytes, path: str, *, declared: str | None = None) -> tuple[str, str]:
    """Return (text, encoding) for a whole (small) file."""
    encoding = detect(data[:SAMPLE_BYTES], path, declared=declared)
    try:
        return data.decode(encoding).lstrip("\ufeff"), encoding
    except UnicodeDecodeError as exc:
        raise ParseError(f"byte {exc.start} is not valid {encoding} (detected from the start of the file); "
                         "export the file as UTF-8", path=path) from None
