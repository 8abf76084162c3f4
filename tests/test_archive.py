import zipfile

import pytest

from clientbase.config import load_settings
from clientbase.errors import ParseError, UnknownFormatError
from flows import steps
from sources import archive, registry


def make_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_archive_members_are_discovered_as_files(tmp_path, fixtures):
    bank = tmp_path / "inbox" / "bank"
    bank.mkdir(parents=True)
    make_zip(bank / "statements_2025-03.zip", {
        "2025/camt053.xml": (fixtures / "bank" / "camt053_v08_pty.xml").read_bytes(),
        "2025/mt940.sta": (fixtures / "bank" / "mt940_de_sparkasse.sta").read_bytes(),
    })
    settings = load_settings(tmp_path)
    files, skipped = steps.discover(settings)
    assert skipped == 0
    assert [f.relative for f in files] == ["bank/statements_2025-03.zip!2025/camt053.xml",
                                           "bank/statements_2025-03.zip!2025/mt940.sta"]
    stats = [steps.ingest_file(settings, f, "run-1") for f in files]
    assert [(s.reader, s.rows_raw) for s in stats] == [("camt", 1), ("mt940", 3)]
    # second discovery: members already ingested, nothing new, extraction reused
    assert steps.discover(settings) == ([], 2)


def test_path_traversal_is_refused(tmp_path):
    path = make_zip(tmp_path / "evil.zip", {"../../etc/cron.d/x": b"boom"})
    with pytest.raises(ParseError, match="unsafe path"):
        archive.extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "etc").exists()


def test_zip_bomb_is_refused(tmp_path):
    path = make_zip(tmp_path / "bomb.zip", {"statement.xml": b"\0" * (64 << 20)})
    with pytest.raises(ParseError, match="possible zip bomb"):
        archive.extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_damaged_archive_is_a_clear_error(tmp_path):
    path = make_zip(tmp_path / "ok.zip", {"a.xml": b"<a/>" * 1000})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # without its central directory it is no archive any more: format detection rejects it, naming the file
    assert archive.is_archive(path) is False
    with pytest.raises(UnknownFormatError, match="ok.zip: unrecognised bank file format"):
        registry.detect(path, "bank")
