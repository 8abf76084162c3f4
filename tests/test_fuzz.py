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
from warehouse.db import connect
from warehouse.load import FileStats, ingest_bulk

FIXTURES = Path(__file__).parent / "fixtures" / "bank"
SEEDS = sorted(p for p in FIXTURES.rglob("*") if p.is_file())
CRM_SEEDS = sorted(p for p in (Path(__file__).parent / "fixtures" / "crm").rglob("*") if p.is_file())
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
    """The streaming reader, and the set-based fast path the nightly run uses where a reader has one."""
    try:
        reader = registry.detect(path, "bank")
    except ClientbaseError:
        return
    try:
        for _ in reader.read(path):
            pass
    except ClientbaseError:
        pass  # a clean, user-facing error is a correct answer to garbage
    if hasattr(reader, "load_bulk"):
        load_bulk_error(reader, path, "bank")  # a clean error or none


def parse_crm(path: Path) -> None:
    """The CRM reader and its fast path (``crm.load_bulk``): clean errors only, and the same ones."""
    try:
        reader = registry.detect(path, "crm")
    except ClientbaseError:
        return
    errors = []
    try:
        for _ in reader.read(path):
            pass
        errors.append(None)
    except ClientbaseError as exc:
        errors.append(str(exc))
    errors.append(load_bulk_error(reader, path, "crm"))
    assert errors[1] == errors[0]


def load_bulk_error(reader, path: Path, kind: str) -> str | None:
    """Load ``path`` through the reader's fast path into a scratch warehouse beside it; the clean error's text,
    or None. Any other exception escapes (that is the finding)."""
    stats = FileStats(path=path.name, sha256=path.name, reader=reader.NAME)
    with connect(path.with_suffix(".duckdb")) as con:
        try:
            ingest_bulk(con, lambda c: reader.load_bulk(c, path, file_hash=path.name, source_file=path.name,
                                                        run_id="r", scratch=path.parent),
                        stats=stats, kind=kind, size_bytes=1, run_id="r")
        except ClientbaseError as exc:
            return str(exc)
    return None


@st.composite
def corrupted_fixture(draw, seeds=SEEDS):
    data = bytearray(draw(st.sampled_from(seeds)).read_bytes())
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
@given(data=corrupted_fixture(CRM_SEEDS))
def test_corrupted_crm_dumps_raise_only_clean_errors(tmp_path, data):
    path = tmp_path / f"c{next(_counter)}"
    path.write_bytes(data)
    parse_crm(path)


def camt_outcome(folder: Path, path: Path, mode: str) -> dict | str:
    from sources import camt
    from tests import parity

    try:
        return parity.load(camt, folder, path, mode)
    except ClientbaseError as exc:
        return str(exc)


@FUZZ
@given(data=corrupted_fixture([p for p in SEEDS if p.name.startswith("camt")]))
def test_corrupted_camt_gives_the_reference_outcome_on_the_fast_path(tmp_path, data):
    """camt's columnar path (``camt.load_bulk``) on damaged statements: the reference's error, or its rows."""
    folder = tmp_path / f"k{next(_counter)}"
    folder.mkdir()
    path = folder / "statement.xml"
    path.write_bytes(data)
    assert camt_outcome(folder, path, "bulk") == camt_outcome(folder, path, "reference")


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


def test_atheris_finds_no_crash(tmp_path):
    """Coverage-guided fuzzing of every reader and fast path (fuzz/parsers.py) for a bounded time. CI replays one
    seed (the same mutations each run, so a red run is this change's doing and replays); exploring new inputs:
    CLIENTBASE_ATHERIS_SEED=0 (random) CLIENTBASE_ATHERIS_SECONDS=600."""
    import subprocess
    import sys

    fuzzer = Path(__file__).resolve().parent.parent / "fuzz" / "parsers.py"
    seconds = int(os.environ.get("CLIENTBASE_ATHERIS_SECONDS", "20"))
    seed = int(os.environ.get("CLIENTBASE_ATHERIS_SEED", "1"))
    corpus = tmp_path / "corpus"
    (tmp_path / "scratch").mkdir()
    env = {**os.environ, "CLIENTBASE_FUZZ_SCRATCH": str(tmp_path / "scratch")}  # not left behind in /tmp
    subprocess.run([sys.executable, str(fuzzer), "--seed-corpus", str(corpus)], check=True, capture_output=True,
                   env=env)
    run = subprocess.run([sys.executable, str(fuzzer), f"-max_total_time={seconds}", f"-seed={seed}",
                          "-max_len=16384", "-rss_limit_mb=3072", f"-artifact_prefix={tmp_path}/", str(corpus)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=seconds + 300, env=env)
    crashes = sorted(tmp_path.glob("crash-*"))
    assert run.returncode == 0 and not crashes, run.stderr[-4000:]
    assert "Done " in run.stderr  # it really ran
    assert any((tmp_path / "scratch").iterdir())  # and used the scratch folder it was given
