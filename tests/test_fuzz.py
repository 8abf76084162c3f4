"""Property tests: whatever bytes arrive, readers either parse or raise the project's own clean errors.

Inputs are valid fixtures with random corruption (flipped bytes, truncation, inserted junk) and random text
behind each format's magic header, so the fuzzing gets past format detection into the parsers.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clientbase.errors import ClientbaseError
from sources import registry

FIXTURES = Path(__file__).parent / "fixtures" / "bank"
SEEDS = sorted(p for p in FIXTURES.rglob("*") if p.is_file())
PREFIXES = [
    b'<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>',
    b":20:X\r\n:25:DE89370400440532013000\r\n:28C:1\r\n:60F:C250301EUR1,00\r\n:61:",
    "1CClientBankExchange\r\nКодировка=Windows\r\nРасчСчет=40702810900000012345\r\n".encode("cp1251"),
    b"OFXHEADER:100\r\nDATA:OFXSGML\r\n\r\n<OFX><BANKMSGSRSV1><STMTTRNRS><STMTRS><CURDEF>USD<BANKTRANLIST><STMTTRN>",
    b"account,booking_date,value_date,amount,currency,counterparty_name\r\n",
]
_counter = itertools.count()
FUZZ = settings(max_examples=int(os.environ.get("CLIENTBASE_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def parse_all(path: Path) -> None:
    try:
        reader = registry.detect(path, "bank")
        for _ in reader.read(path):
            pass
    except ClientbaseError:
        pass  # a clean, user-facing error is a correct answer to garbage


@st.composite
def corrupted_fixture(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)).read_bytes())
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif action == "delete" and data:
            del data[at:at + draw(st.integers(1, 50))]
    return bytes(data)


@FUZZ
@given(data=corrupted_fixture())
def test_corrupted_fixtures_raise_only_clean_errors(tmp_path, data):
    path = tmp_path / f"f{next(_counter)}"
    path.write_bytes(data)
    parse_all(path)


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), tail=st.one_of(
    st.binary(max_size=600),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=600).map(lambda t: t.encode("utf-8")),
    st.text(alphabet=":?/;,.0123456789CDRKEURTXN\r\n ", max_size=600).map(str.encode),
))
def test_random_content_behind_magic_headers(tmp_path, prefix, tail):
    path = tmp_path / f"g{next(_counter)}"
    path.write_bytes(prefix + tail)
    parse_all(path)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.name)
def test_every_fixture_is_detected(seed):
    assert registry.detect(seed, "bank") is not None
