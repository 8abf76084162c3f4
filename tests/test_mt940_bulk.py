"""The set-based path for MT940 (sources/mt940_bulk.py) gives exactly what the reference reader gives, row for
row: raw rows (every column), quarantine rows (record, line, reason, raw text), statement balances and file
errors."""

import datetime as dt
import os
import random
import re
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clientbase.errors import ParseError
from sources import columnar, mt940, mt940_bulk
from tests import parity
from warehouse.db import connect

FIXTURES = Path(__file__).parent / "fixtures" / "bank"


def load(tmp_path: Path, path: Path, mode: str):
    return parity.load(mt940, tmp_path, path, mode)


def both(tmp_path: Path, path: Path):
    return parity.both(mt940, tmp_path, path)


@pytest.mark.parametrize("name", ["mt940_de_sparkasse.sta", "mt940_nl_rabobank.swi", "mt942_ru_cp1251.txt"])
def test_fixtures_equal_reference(tmp_path, name):
    ref = both(tmp_path, FIXTURES / name)
    assert ref["rows"]


def test_german_fixture_values(tmp_path):
    ref = both(tmp_path, FIXTURES / "mt940_de_sparkasse.sta")
    assert [(r["record_number"], r["amount"], r["purpose"], r["end_to_end_id"]) for r in ref["rows"]] == [
        (1, Decimal("1500.00000"), "Rechnung 2025-0042 Kunde 4711", "INV-2025-0042"),
        (2, Decimal("-82.60000"), "Strom 01/2025", "NOTPROVIDED"), (3, Decimal("0.50000"), "ZINSEN", None)]
    (balance,) = ref["balances"]
    assert (balance["record_number"], balance["entries_total"]) == (3, Decimal("1417.90000"))


# ---- generated awkward files ------------------------------------------------------------------------------

CYRILLIC = ['ООО "Ромашка" ИНН 7707083893 Оплата по счету N 15', "Возврат займа ИНН:500100732259",
            "Комиссия банка", "ИНН 123 коротко"]
WESTERN = ["Müller und Söhne", "Straße 1", "Zahlung"]


PLAIN = [False]


def pick(rng: random.Random, options: list, weights: list[int]) -> list:
    """rng.choices, but in a plain message only among the options with the plain (first) one's weight class."""
    if PLAIN[0]:
        return [rng.choice([o for o, w in zip(options, weights, strict=True) if w >= max(weights) // 2])]
    return rng.choices(options, weights)


def awkward(rng: random.Random, p: float) -> bool:
    return not PLAIN[0] and rng.random() < p


def _german(rng: random.Random, words: list[str]) -> list[str]:
    name = rng.choice(words)
    body = pick(rng, [
        f"166?00GUTSCHRIFT?20SVWZ+{rng.choice(words)}?30COBADEFFXXX?31DE02120300000000202051?32{name}",
        f"105?00LASTSCHRIFT?109248?20EREF+E2E-{rng.randint(1, 99)}?21MREF+M-1?22CRED+DE98ZZZ0999?23SVWZ+Strom"
        f"?30COLSDE33XXX?31DE44500105175407324931?32{name[:20]}?33{name[20:]}",
        f"166?00GUTSCHR?20Rechnung 42 BIC?21Kunde  7 BIC?22noch mehr IBAN?32{name}",
        "805?00ZINSEN", "166?20EREF+A?21SVWZ+B?22KREF+C", "166?20SVWZ+x?20doppelt", "166?21erst?20dann",
        "166?00TEXT?20ende?", "166?20EREF+NUR", "166?20SVWZ+a SVWZ+b", "166?20IBAN ohne Plus",
        f"166?20ABWA+X SVWZ+{rng.choice(words)}  BIC", "166?34irrelevant?20SVWZ+z?34nochmal"], [20, 20, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5])[0]
    lines = [body[i:i + 65] for i in range(0, len(body), 65)] if rng.random() < 0.6 else [body]
    return [":86:" + lines[0], *lines[1:]]


def _dutch(rng: random.Random, words: list[str]) -> list[str]:
    body = pick(rng, [
        f"/TRTP/SEPA OVERBOEKING/IBAN/NL20INGB0001234567/BIC/INGBNL2A/NAME/{rng.choice(words)}/REMI/"
        f"Factuur {rng.randint(1, 999)} klantnr/EREF/E2E-{rng.randint(1, 99)}",
        "/NAME/IBAN/x/REMI/ a /REMI/second/", "/CNTP/NL20INGB0001234567/INGBNL2A/Naam/Stad/REMI/r",
        "/EREF/NOTPROVIDED/BIC/RABONL2U"], [5, 1, 1, 1])[0]
    cut = rng.randint(10, len(body) - 1) if rng.random() < 0.4 else len(body)
    return [":86:" + body[:cut], *([body[cut:]] if cut < len(body) else [])]


def _entry(rng: random.Random, day: dt.date, words: list[str], mt942: bool) -> list[str]:
    mark = pick(rng, ["C", "D", "RC", "RD", "c", "CR", "DR"], [40, 40, 5, 5, 2, 4, 4])[0]
    amount = pick(rng, [f"{rng.randint(0, 99999)},{rng.randint(0, 99):02d}", f"{rng.randint(1, 999)},",
                          "1,2,3", "12.50", "999999999999,99", "1,123456"], [80, 5, 3, 3, 6, 2])[0]
    entry = pick(rng, [f"{day:%m%d}", "", "1231", "0102", "0230", "  "], [60, 25, 5, 5, 2, 3])[0]
    code = pick(rng, ["NTRF", "NMSC", "N541", "ntrf", "", "NTR "], [60, 20, 10, 3, 4, 3])[0]
    ref = pick(rng, ["NONREF", "", "KREF-1", "nonref", "A/B", "X" * 17, words[0][:8]], [50, 15, 15, 5, 5, 5, 5])[0]
    bank = pick(rng, ["", f"//{rng.randint(10**9, 10**10)}", "//", "//" + "9" * 24], [40, 50, 5, 5])[0]
    date = pick(rng, [f"{day:%y%m%d}", "250230", "251301"], [96, 2, 2])[0]
    lines = [f":61:{date}{entry}{mark}{amount}{code}{ref}{bank}" + pick(rng, ["", " ", "\t"], [8, 1, 1])[0]]
    if awkward(rng, 0.1):
        lines.append(rng.choice(["/OCMT/EUR1500,00/", "zweite", "/OCMT/", ":99:unbekannt"]))
    style = pick(rng, ["german", "dutch", "free", "none", "empty"], [30, 20, 20, 15, 5])[0]
    if style == "german":
        lines += _german(rng, words)
    elif style == "dutch":
        lines += _dutch(rng, words)
    elif style == "free":
        text = rng.choice(words)
        lines += [":86:" + text, *(["  " + rng.choice(words)] if rng.random() < 0.3 else [])]
    elif style == "empty":
        lines += [":86:"]
    if awkward(rng, 0.03):
        lines.append(":86:zweites 86")
    return lines


def _message(rng: random.Random, n: int, words: list[str], currency: str) -> list[str]:
    PLAIN[0] = rng.random() < 0.5  # a message of plain choices only, or one where anything may be awkward
    day = dt.date(2024, 12, 20) + dt.timedelta(days=rng.randint(0, 30))
    mt942 = awkward(rng, 0.1)
    account = pick(rng, ["DE89370400440532013000", "10020030/1234567", f"NL91RABO0315273637{currency}",
                         "40702810900000012345", ""], [3, 3, 3, 3, 1])[0]
    lines = [f":20:STMT{n}" + rng.choice(["", "", " "]), f":25:{account}", pick(rng, [f":28C:{n}/1", ":28:1",
                                                                                    ":28C:x", ""], [5, 1, 1, 1])[0]]
    if mt942:
        lines += [f":34F:{currency}0,", ":13D:2503151030+0300"]
    else:
        opening = pick(rng, ["60F", "60M", "60"], [80, 15, 5])[0]
        lines.append(pick(rng, [f":{opening}:C{day:%y%m%d}{currency}1000,00", f":{opening}:D{day:%y%m%d}"
                                  f"{currency}1,", f":{opening}:C{day:%y%m%d}{currency}1000,00 rest",
                                  f":{opening}:C250230{currency}1,00", f":{opening}:C{day:%y%m%d}{currency}1,000001"],
                                [85, 5, 5, 5, 2])[0])
    if awkward(rng, 0.03):
        lines.append(":86:vor dem ersten Umsatz")
    for _ in range(rng.choice([0, 1, 3, 6])):
        lines += _entry(rng, day, words, mt942)
    if mt942:
        lines += [f":90C:1{currency}125000,00", f":90D:0{currency}0,"]
    else:
        closing = pick(rng, ["62F", "62M", "62"], [80, 15, 5])[0]
        lines.append(f":{closing}:{rng.choice('CD')}{day:%y%m%d}{currency}{rng.randint(0, 9999)},{rng.randint(0, 99)}")
        if rng.random() < 0.2:
            lines.append(f":64:C{day:%y%m%d}{currency}5,00")
    lines = [line for line in lines if line]
    if awkward(rng, 0.05):
        lines.insert(rng.randint(1, len(lines)), rng.choice(["   ", " -", ":", ":NS:22x"]))
    if rng.random() < 0.1:
        return ["{1:F01RABONL2UXXXX0000000000}{2:I940RABONL2UXXXXN}{4:", *lines, "-}"]
    return [*lines, rng.choice(["-", "-}", ""])]


def generated(seed: int, messages: int = 40) -> tuple[list[str], str]:
    rng = random.Random(seed)
    encoding = rng.choice(["cp1251", "cp866", "utf-8", "cp1252"])
    words = CYRILLIC if encoding in ("cp1251", "cp866") else WESTERN if encoding == "cp1252" else CYRILLIC + WESTERN
    currency = "RUB" if encoding in ("cp1251", "cp866") else "EUR"
    lines = [" junk before"] if rng.random() < 0.1 else []
    for n in range(messages):
        lines += _message(rng, n, words, currency)
    return lines, encoding


@settings(max_examples=int(os.environ.get("CLIENTBASE_PARITY_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**9), newline=st.sampled_from(["\r\n", "\n", "\r"]),
       chunk=st.sampled_from([300, 2048, 1 << 20]), block=st.sampled_from([3, 7, 1 << 18]))
def test_generated_files_equal_reference(tmp_path, seed, newline, chunk, block):
    lines, encoding = generated(seed)
    path = tmp_path / "gen.sta"
    path.write_bytes((newline.join(lines) + newline).encode(encoding))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mt940_bulk, "CHUNK_BYTES", chunk)  # many chunks: messages cut at chunk ends carry over
        mp.setattr(columnar, "TRANSCODE_BLOCK", block)  # transcoding blocks that cut UTF-8 characters
        ref = both(tmp_path, path)
    assert ref["stats"][3] in (encoding, "utf-8")


def test_generated_files_cover_plain_and_odd_messages(tmp_path, monkeypatch):
    calls = []
    original = mt940.message_records
    monkeypatch.setattr(mt940, "message_records", lambda *a: calls.append(a[1]) or original(*a))
    lines, encoding = generated(7, messages=200)
    path = tmp_path / "many.sta"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    ref = both(tmp_path, path)
    calls.clear()
    with connect(tmp_path / "again.duckdb") as con:
        mt940.load_bulk(con, path, file_hash="h", source_file=path.name, run_id="r", scratch=tmp_path)
    messages = sum(1 for line in lines if line.startswith(":20:"))
    assert 20 < len(set(calls)) < messages - 20  # both paths really ran
    reasons = {q["reason"].split(":")[0] for q in ref["quarantine"]}
    assert "malformed MT940 message" in reasons
    assert any(r["is_reversal"] for r in ref["rows"]) and any(r["counterparty_tax_id"] for r in ref["rows"])
    assert any(r["booking_date"].year != r["value_date"].year for r in ref["rows"])


def test_only_unusual_messages_go_through_the_reference_code(tmp_path, monkeypatch):
    calls = []
    original = mt940.message_records
    monkeypatch.setattr(mt940, "message_records", lambda *a: calls.append(a[1]) or original(*a))
    body = [":20:A", ":25:DE89370400440532013000", ":28C:1/1", ":60F:C250301EUR10,00",
            ":61:2503020302CR1,00NTRFNONREF//B1", ":86:166?00GUTSCHRIFT?20SVWZ+Miete?32Vermieter", ":62F:C250302EUR11,00",
            "-", ":20:B", ":25:DE89370400440532013000", ":60F:C250302EUR11,00", ":61:2503030303cR1,00NTRFNONREF",
            ":62F:C250303EUR12,00", "-"]
    path = tmp_path / "two.sta"
    path.write_text("\r\n".join(body) + "\r\n", encoding="utf-8")
    ref = both(tmp_path, path)
    calls.clear()
    with connect(tmp_path / "again.duckdb") as con:
        mt940.load_bulk(con, path, file_hash="h", source_file=path.name, run_id="r", scratch=tmp_path)
    assert calls == [9]  # the lowercase mark: the library's rules, not a copy
    assert [(r["record_number"], r["source_line"], r["purpose"], r["counterparty_name"]) for r in ref["rows"]] == [
        (1, 1, "Miete", "Vermieter"), (2, 9, None, None)]


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_ascii_blocks_and_utf8_blocks_mix(tmp_path, monkeypatch, bom):
    """ASCII blocks skip decoding; a U+FEFF after the start stays a character, a character cut at a block end
    is still whole."""
    monkeypatch.setattr(mt940_bulk, "CHUNK_BYTES", 64)
    lines = []
    purposes = ["Miete", "Miete", "Stra\u00dfe \ufeff Ende", "Miete", "\u0418\u041d\u041d 7707083893"]
    for n, purpose in enumerate(purposes):
        lines += [f":20:S{n}", ":25:DE89370400440532013000", ":60F:C250301EUR0,00",
                  ":61:2503020302C1,00NTRFNONREF", f":86:166?20SVWZ+{purpose}", ":62F:C250302EUR1,00", "-"]
    path = tmp_path / "mixed.sta"
    path.write_bytes((bom + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    ref = both(tmp_path, path)
    assert [r["purpose"] for r in ref["rows"]] == purposes


def test_german_shape_is_the_pattern():
    """The plain German shape, read from the sub-field codes, is this pattern: three digits, sub-fields with a
    two-digit code, the used ones (00, 20..33) at most once and in ascending order."""
    other = r"(?:\?(?:0[1-9]|1[0-9]|3[4-9]|[4-9][0-9])[^?]*)*"
    pattern = re.compile("^[0-9]{3}" + other + "".join(
        rf"(?:\?{c}[^?]*)?{other}" for c in ("00", *map(str, range(20, 34)))) + r"\Z", re.DOTALL)
    texts = ["166?00GUTSCHRIFT?20SVWZ+x?30BIC?31IBAN?32Name", "166?21erst?20dann", "166?20SVWZ+x?20doppelt",
             "166?00TEXT?20ende?", "166?34irrelevant?20SVWZ+z?34nochmal", "166", "16?20x", "1666?20x",
             "166?2", "166?2x", "166?ab", "166?\u0662\u0660x", "166?20a?33b?00c", "166?19?01?99?20",
             "166?20?21?22?23?24?25", "166?00?00", "166?33a?32b", "166?20\u00e4\u00f6?32\u20ac", "1a6?20x",
             "", "166?20x\ny", "?20x"]
    _, wrong = mt940_bulk._subfields(pl.Series(texts))
    assert wrong.tolist() == [not pattern.match(t) for t in texts]
    assert wrong.tolist().count(False) == 7


def test_line_tags_are_the_tag_pattern():
    lines = [":20:A", ":61:x", ":28C:1", ":60F:C", ":60M:C", ":60:C", ":62F:", ":86:", ":13D:x", ":34F:EUR",
             ":NS:22", ":2:x", ":200:x", ":20", ":20C", ":20c:x", "::20:", ":6\u00e4:", ":20C:", ":99Z:z",
             "20:x", ":", "-", ":\u0662\u0660:", ":28C", ":28CX:", " :20:x", ":64:C", ":65:D", ":62M:x", ":25:DE"]
    code, short, tagged, colon = mt940_bulk._line_tags(pl.Series(lines))
    tags = [re.match(mt940_bulk._TAG, line) for line in lines]
    assert tagged.tolist() == [bool(t) for t in tags]
    assert short.tolist() == [bool(t) and len(t.group(1)) == 2 for t in tags]
    x = mt940_bulk._X
    assert code.tolist() == [mt940_bulk._TAGS.get(t.group(1), x) if t else x for t in tags]
    assert colon.tolist() == [line.startswith(":") for line in lines]


def test_heads_test_prefixes_and_equality_as_polars_does():
    values = pl.Series(["", "-", "-}", "-}\r\n", "-\n", "}", "{5:", "{5:{CHK:1}}", "-}{5:x", "-}{5", ":20:",
                        ":20", ":20:ABCDEFGHIJKLMNOP", "{1:F01}{4:", "\u00e4-", "-\u00e4", "\r\n"]).slice(1)
    head = mt940_bulk._Heads(values)
    for text in ["", "-", "-}", "-}\r\n", "-\n", "}", "\r\n", "\u00e4"]:
        assert head.equals(text).tolist() == (values == text).fill_null(False).to_list(), text
    for prefix in ["{5:", ":20:", "-}{5", "{1:", "-", "\u00e4"]:
        expected = values.str.starts_with(prefix).fill_null(False).to_list()
        assert head.starts(prefix).tolist() == expected, prefix


# ---- file-level errors: the same message ------------------------------------------------------------------

def assert_same_error(tmp_path: Path, path: Path, match: str) -> None:
    with pytest.raises(ParseError) as expected:
        list(mt940.read(path))
    with connect(tmp_path / "bulk.duckdb") as con, pytest.raises(ParseError) as got:
        mt940.load_bulk(con, path, file_hash="h", source_file=path.name, run_id="r", scratch=tmp_path)
    assert str(got.value) == str(expected.value)
    assert match in str(got.value)


def test_overlong_line_is_the_same_error(tmp_path):
    path = tmp_path / "long.sta"
    lines, _ = generated(3, 5)
    path.write_text("\n".join([*lines, ":86:" + "x" * 10_000]) + "\n", encoding="utf-8")
    assert_same_error(tmp_path, path, "longer than 10000 characters")


def test_bad_bytes_after_the_sampled_head_are_the_same_error(tmp_path, monkeypatch):
    monkeypatch.setattr(mt940_bulk, "CHUNK_BYTES", 1 << 16)
    lines = []
    for n in range(10_000):
        lines += [f":20:S{n}", ":25:DE89370400440532013000", ":60F:C250301EUR0,00",
                  ":61:2503020302C1,00NTRFNONREF", ":86:166?20SVWZ+Straße", ":62F:C250302EUR1,00", "-"]
    data = bytearray("\r\n".join(lines).encode("utf-8"))
    assert len(data) > 1.3 * (1 << 20)
    data[len(data) * 9 // 10] = 0xFF
    path = tmp_path / "bad.sta"
    path.write_bytes(bytes(data))
    assert_same_error(tmp_path, path, "not valid utf-8")


def test_mangled_file_is_the_same_error(tmp_path):
    path = tmp_path / "mangled.sta"
    path.write_text((FIXTURES / "mt940_de_sparkasse.sta").read_text("cp1252").replace("ü", "\ufffd"), "utf-8")
    assert_same_error(tmp_path, path, "U+FFFD")
