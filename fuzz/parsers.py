"""Coverage-guided fuzzing of every reader with atheris (libFuzzer): only the project's own errors may escape.

    uv run python fuzz/parsers.py --seed-corpus CORPUS     # the test fixtures, one input per reader
    uv run python fuzz/parsers.py -max_total_time=600 -max_len=16384 CORPUS

The first input byte picks the reader (bank formats through content detection, the set-based fast paths
of 1C, bank CSV and MT940, CRM dumps, the CRM CSV fast path); the rest is the file. libFuzzer adds what it finds to CORPUS. A crash leaves ``crash-<sha1>``
with the input: ``uv run python fuzz/parsers.py crash-...`` replays it. CI runs it for a bounded time
(tests/test_fuzz.py::test_atheris_finds_no_crash). The readers' scratch files go to ``CLIENTBASE_FUZZ_SCRATCH``
if set, else to a new ``clientbase-fuzz-*`` folder in the temp directory, which libFuzzer's exit leaves behind.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from pathlib import Path

import atheris
import duckdb

with atheris.instrument_imports(include=["sources", "warehouse"]):
    from clientbase.errors import ClientbaseError
    from sources import registry
    from warehouse.db import ensure_schema
    from warehouse.load import FileStats, ingest_bulk

# the readers' scratch files and the warehouse inputs are loaded into; libFuzzer ends the process without
# Python's exit handlers, so whoever runs it removes the folder (tests/test_fuzz.py gives one in tmp_path)
SCRATCH = (Path(os.environ["CLIENTBASE_FUZZ_SCRATCH"]) if os.environ.get("CLIENTBASE_FUZZ_SCRATCH")
           else Path(tempfile.mkdtemp(prefix="clientbase-fuzz-")))
TARGETS = ("bank", "bank_bulk", "crm", "crm_bulk")
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
_db = None
_inputs = itertools.count()


def _bulk(path: Path, kind: str = "bank") -> None:
    global _db
    reader = registry.detect(path, kind)
    if not hasattr(reader, "load_bulk"):
        return
    if _db is None:  # one warehouse for the whole session: each input is its own transaction
        _db = duckdb.connect(str(SCRATCH / "fuzz.duckdb"))
        ensure_schema(_db)
    file_hash = f"f{next(_inputs)}"  # the manifest key: a new file each time
    stats = FileStats(path=path.name, sha256=file_hash, reader=reader.NAME)
    ingest_bulk(_db, lambda c: reader.load_bulk(c, path, file_hash=file_hash, source_file=path.name, run_id="r",
                                                scratch=SCRATCH),
                stats=stats, kind=kind, size_bytes=1, run_id="r")


def seed_corpus(target_dir: Path, max_bytes: int = 16384) -> int:
    """Every bank fixture for the bank and bulk targets, every CRM fixture for the CRM targets."""
    target_dir.mkdir(parents=True, exist_ok=True)
    seeds = [(TARGETS.index(t), p) for t in ("bank", "bank_bulk") for p in (FIXTURES / "bank").rglob("*")]
    seeds += [(TARGETS.index(t), p) for t in ("crm", "crm_bulk") for p in (FIXTURES / "crm").rglob("*")]
    written = 0
    for selector, path in seeds:
        if path.is_file() and path.stat().st_size <= max_bytes:
            (target_dir / f"{selector}-{path.name}").write_bytes(bytes([selector]) + path.read_bytes())
            written += 1
    return written


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    target, body = TARGETS[data[0] % len(TARGETS)], data[1:]
    path = SCRATCH / "input"
    path.write_bytes(body)
    try:
        if target.endswith("_bulk"):
            _bulk(path, target.split("_")[0])
        else:
            for _ in registry.detect(path, target.split("_")[0]).read(path):
                pass
    except ClientbaseError:
        pass  # a clean, user-facing error is a correct answer to garbage


def main() -> None:
    if sys.argv[1:2] == ["--seed-corpus"]:
        print(f"{seed_corpus(Path(sys.argv[2]))} seeds written to {sys.argv[2]}")
        return
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
