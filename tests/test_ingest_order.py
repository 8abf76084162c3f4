"""Files loaded at the same time commit in inbox order: the warehouse equals a one-by-one load (steps called
directly, no Prefect; the flow's own use is covered by tests/test_flow.py)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from clientbase.config import load_settings
from clientbase.demo import DemoSpec, generate
from clientbase.errors import NotLoaded, UnknownFormatError
from flows import steps
from warehouse.db import read_frames
from warehouse.load import CommitOrder


def run_turns(order: CommitOrder, work: dict[int, float], fail: set[int] = frozenset()):
    """Each position 'loads' for its seconds, then takes its sequence number; (commit log, outcome per position)."""
    log: list[tuple[int, int]] = []

    def load(position: int):
        try:
            with order.turn(position, f"file{position}") as turn:
                time.sleep(work[position])
                if position in fail:
                    raise ValueError(f"file{position} is broken")
                seq = turn.seq()
                log.append((position, seq))
                return seq
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test looks at
            return exc

    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        outcomes = list(pool.map(load, sorted(work)))
    return log, outcomes


def test_files_commit_in_inbox_order_whatever_order_they_finish_loading():
    log, outcomes = run_turns(CommitOrder(last_seq=7), {0: 0.3, 1: 0.1, 2: 0.0, 3: 0.2})
    assert log == [(0, 8), (1, 9), (2, 10), (3, 11)]
    assert outcomes == [8, 9, 10, 11]


def test_a_failed_file_stops_the_later_ones_and_not_the_earlier_ones():
    log, outcomes = run_turns(CommitOrder(last_seq=0), {0: 0.3, 1: 0.0, 2: 0.0, 3: 0.1}, fail={1})
    assert log == [(0, 1)]
    assert outcomes[0] == 1
    assert str(outcomes[1]) == "file1 is broken"
    assert [type(o) for o in outcomes[2:]] == [NotLoaded, NotLoaded]
    assert str(outcomes[2]).startswith("not loaded: file1 failed before it")
    # what the flow raises: the failure, not a file rolled back because of it
    with pytest.raises(ValueError, match="file1 is broken"):
        steps.loaded_files(outcomes)


def test_a_turn_that_commits_nothing_still_passes_in_order():
    order = CommitOrder(last_seq=0)
    with order.turn(0, "a"):
        pass  # no transaction (nothing to load): the next file still gets its turn and the next number
    with order.turn(1, "b") as turn:
        assert turn.seq() == 2


TABLES = {
    "bank": "SELECT * EXCLUDE (file_hash) FROM raw.bank_transaction ORDER BY rowid",
    "balances": "SELECT * EXCLUDE (file_hash) FROM raw.statement_balance ORDER BY rowid",
    "quarantine": "SELECT * EXCLUDE (file_hash) FROM ops.quarantine ORDER BY rowid",
    "files": "SELECT path, kind, reader, records_in, rows_raw, rows_quarantined, ingest_seq, encoding "
             "FROM ops.ingested_file ORDER BY ingest_seq",
    "clients": 'SELECT * FROM raw."crm_clients" ORDER BY rowid',
    "invoices": 'SELECT * FROM raw."crm_invoices" ORDER BY rowid',
}


def load(home, inbox_from, *, workers: int, slow_first: bool = False, monkeypatch=None):
    home.mkdir(parents=True)
    (home / "inbox").symlink_to(inbox_from)
    settings = load_settings(home)
    files, _ = steps.discover(settings)
    if slow_first:  # the first file takes longest, so the others finish loading first and wait for their turn
        detect = steps.registry.detect
        first = files[0].path

        def slow(path, kind):
            if str(path) == first:
                time.sleep(0.5)
            return detect(path, kind)

        monkeypatch.setattr(steps.registry, "detect", slow)
    order = steps.commit_order(settings)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda job: _outcome(settings, job[1], order.turn(job[0], job[1].relative)),
                                 enumerate(files)))
    return settings, files, outcomes


def _outcome(settings, item, turn):
    try:
        return steps.ingest_file(settings, item, "run-1", turn)
    except Exception as exc:  # noqa: BLE001
        return exc


@pytest.fixture(scope="module")
def demo_inbox(tmp_path_factory):
    inbox = tmp_path_factory.mktemp("demo") / "inbox"
    generate(inbox, DemoSpec(clients=30, months=6, seed=5))
    return inbox


def test_loading_files_at_once_gives_the_warehouse_of_a_one_by_one_load(tmp_path, demo_inbox, monkeypatch):
    one, files, _ = load(tmp_path / "one", demo_inbox, workers=1)
    many, _, outcomes = load(tmp_path / "many", demo_inbox, workers=3, slow_first=True, monkeypatch=monkeypatch)
    assert len(files) > 5 and {f.kind for f in files} == {"bank", "crm"}
    assert [s.path for s in steps.loaded_files(outcomes)] == [f.relative for f in files]
    expected, got = read_frames(one.warehouse_path, TABLES), read_frames(many.warehouse_path, TABLES)
    assert expected["files"]["path"].to_list() == [f.relative for f in files]
    assert expected["files"]["ingest_seq"].to_list() == list(range(1, len(files) + 1))
    assert expected["bank"].height > 100 and expected["invoices"].height > 50
    for name, frame in expected.items():
        assert got[name].equals(frame), name


def test_a_broken_file_among_others_leaves_the_files_before_it_loaded(tmp_path, demo_inbox):
    inbox = tmp_path / "inbox"
    bank = sorted((demo_inbox / "bank").iterdir())
    (inbox / "bank").mkdir(parents=True)
    for n, path in enumerate(bank[:4]):
        (inbox / "bank" / f"{n}_{path.name}").symlink_to(path)
    (inbox / "bank" / "2a_statement.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    settings, files, outcomes = load(tmp_path / "home", inbox, workers=2)
    assert [f.relative.split("_")[0] for f in files] == ["bank/0", "bank/1", "bank/2", "bank/2a", "bank/3"]
    with pytest.raises(UnknownFormatError, match="2a_statement.pdf: unrecognised bank file format"):
        steps.loaded_files(outcomes)
    assert isinstance(outcomes[4], NotLoaded)
    loaded = read_frames(settings.warehouse_path, TABLES)["files"]
    assert loaded["path"].to_list() == [f.relative for f in files[:3]]
    # the next run loads the rest once the broken file is gone
    (inbox / "bank" / "2a_statement.pdf").unlink()
    files, _ = steps.discover(settings)
    assert [f.relative for f in files] == [f"bank/3_{bank[3].name}"]
    steps.ingest_file(settings, files[0], "run-2", steps.commit_order(settings).turn(0, files[0].relative))
    assert read_frames(settings.warehouse_path, TABLES)["files"]["ingest_seq"].to_list() == [1, 2, 3, 4]


def test_discover_hashes_only_the_files_it_has_not_seen(tmp_path, monkeypatch):
    """The inbox index keeps a file's hash while stat finds it unchanged; a rewrite is hashed again even with its
    old size and modification time (its status-change time moved), as is a file changed just before a run."""
    import os

    from warehouse.load import file_sha256

    bank = tmp_path / "inbox" / "bank"
    bank.mkdir(parents=True)
    header = "account,booking_date,amount,currency,counterparty_name\n"
    a, b = bank / "a.csv", bank / "b.csv"
    a.write_text(header + "DE89370400440532013000,2026-06-15,10.00,EUR,Kiosk Lindner\n", encoding="utf-8")
    b.write_text(header + "DE89370400440532013000,2026-06-16,20.00,EUR,Kiosk Lindner\n", encoding="utf-8")
    time.sleep(2.2)  # older than the index's settling time
    hashed = []
    monkeypatch.setattr(steps, "file_sha256", lambda path: hashed.append(path.name) or file_sha256(path))
    settings = load_settings(tmp_path)
    first, _ = steps.discover(settings)
    assert sorted(hashed) == ["a.csv", "b.csv"] and len(first) == 2
    hashed.clear()
    assert steps.discover(settings) == (first, 0) and hashed == []  # nothing ingested yet: the same two, unread

    old = b.stat()
    b.write_text(header + "DE89370400440532013000,2026-06-16,21.00,EUR,Kiosk Lindner\n", encoding="utf-8")
    os.utime(b, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert b.stat().st_size == old.st_size and b.stat().st_mtime_ns == old.st_mtime_ns
    again, _ = steps.discover(settings)
    assert hashed == ["b.csv"]
    assert again[0] == first[0] and again[1].sha256 == file_sha256(b) != first[1].sha256
    hashed.clear()
    steps.discover(settings)
    assert hashed == ["b.csv"]  # changed just now: not indexed yet

    hashed.clear()
    (tmp_path / steps.INBOX_INDEX).write_text("{not json", encoding="utf-8")
    assert steps.discover(settings)[0] == again and sorted(hashed) == ["a.csv", "b.csv"]


def test_discover_knows_a_file_by_its_inode_whatever_path_reaches_it(tmp_path, monkeypatch):
    """An inbox of links (or one reached through another folder) reuses the index: the same device and inode."""
    from warehouse.load import file_sha256

    store = tmp_path / "store"
    store.mkdir()
    header = "account,booking_date,amount,currency,counterparty_name\n"
    (store / "a.csv").write_text(header + "DE89370400440532013000,2026-06-15,10.00,EUR,Kiosk Lindner\n",
                                 encoding="utf-8")
    bank = tmp_path / "inbox" / "bank"
    bank.mkdir(parents=True)
    (bank / "2026-06-15.csv").symlink_to(store / "a.csv")
    monkeypatch.setattr(steps, "_SETTLED_NS", 0)  # index at once: this test is not about the settling time
    hashed = []
    monkeypatch.setattr(steps, "file_sha256", lambda path: hashed.append(path.name) or file_sha256(path))
    settings = load_settings(tmp_path)
    first, _ = steps.discover(settings)
    assert hashed == ["2026-06-15.csv"]

    (bank / "2026-06-15.csv").unlink()
    (bank / "renamed.csv").symlink_to(store / "a.csv")
    hashed.clear()
    again, _ = steps.discover(settings)
    assert hashed == [] and again[0].relative == "bank/renamed.csv" and again[0].sha256 == first[0].sha256

    (bank / "renamed.csv").unlink()
    (store / "b.csv").write_text((store / "a.csv").read_text(encoding="utf-8"), encoding="utf-8")
    (bank / "renamed.csv").symlink_to(store / "b.csv")  # another file at the same path: another inode
    assert steps.discover(settings)[0][0].sha256 == first[0].sha256 and hashed == ["renamed.csv"]
