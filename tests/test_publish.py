import os

import duckdb
import polars as pl
import pytest

from warehouse import publish
from warehouse.db import connect, put_staging, staging_files


def frame(v: int) -> pl.DataFrame:
    return pl.DataFrame({"month": ["2025-01-01", "2025-02-01"], "v": [v, v + 1]})


def publish_version(home, version, v):
    d = publish.new_version_dir(home, version)
    publish.write_mart(d, "m", frame(v), "month")
    return publish.publish(home, d, keep=2)


def read(home):
    return pl.read_parquet(home / "marts" / "m" / "*.parquet").sort("month")["v"].to_list()


def test_publish_switches_a_symlink_atomically(tmp_path):
    link = publish_version(tmp_path, "v1", 10)
    assert link.is_symlink() and os.readlink(link) == os.path.join(".marts_versions", "v1")  # relative
    assert sorted(p.name for p in (link / "m").iterdir()) == ["month=2025-01-01.parquet", "month=2025-02-01.parquet"]
    assert read(tmp_path) == [10, 11]
    publish_version(tmp_path, "v2", 20)
    assert read(tmp_path) == [20, 21]


def test_failure_between_write_and_swap_leaves_previous_marts(tmp_path, monkeypatch):
    publish_version(tmp_path, "v1", 10)
    d = publish.new_version_dir(tmp_path, "v2")
    publish.write_mart(d, "m", frame(99), "month")

    def crash(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(publish.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        publish.publish(tmp_path, d)
    monkeypatch.undo()
    assert read(tmp_path) == [10, 11]  # readers still see v1, complete
    publish.discard(d)
    assert not d.exists()


def test_old_versions_are_pruned(tmp_path):
    for i, version in enumerate(["v1", "v2", "v3", "v4"]):
        publish_version(tmp_path, version, i)
    assert sorted(p.name for p in publish.versions_root(tmp_path).iterdir()) == ["v3", "v4"]
    assert publish.current_version_dir(tmp_path).name == "v4"


def test_carry_over_keeps_other_months(tmp_path):
    publish_version(tmp_path, "v1", 10)
    previous = publish.current_version_dir(tmp_path)
    d = publish.new_version_dir(tmp_path, "v2")
    publish.write_mart(d, "m", pl.DataFrame({"month": ["2025-02-01"], "v": [500]}), "month")
    carried = publish.carry_over(d, previous, "m", lambda name: name != "month=2025-02-01.parquet")
    assert carried == 1
    publish.publish(tmp_path, d)
    assert read(tmp_path) == [10, 500]


def test_same_frame_gives_same_bytes(tmp_path):
    a = publish.new_version_dir(tmp_path, "a")
    b = publish.new_version_dir(tmp_path, "b")
    publish.write_mart(a, "m", frame(1), "month")
    publish.write_mart(b, "m", frame(1), "month")
    for f in (a / "m").iterdir():
        assert f.read_bytes() == (b / "m" / f.name).read_bytes()


def test_staging_tables_are_parquet_parts_behind_relative_views(tmp_path, monkeypatch):
    """Warehouses from before this layout held staging as tables, then as one file per table: both give way to
    the view over HOME/staging/<name>/, read by a relative path (the home can move); a rebuild replaces the parts,
    an increment adds one after them."""
    home = tmp_path / "home"
    (home / "staging").mkdir(parents=True)
    (home / "staging" / "client.parquet").write_bytes(b"the previous layout")
    with connect(home / "warehouse.duckdb") as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS staging; CREATE TABLE staging.client AS SELECT 'old' AS client_id")
        for part, rows, replace in ((3, ["C1", "C2"], True), (4, ["C0"], False), (4, ["C3"], True),
                                    (5, ["C4"], False)):
            built = tmp_path / "built.parquet"
            pl.DataFrame({"client_id": rows}).write_parquet(built)
            put_staging(con, home, "staging.client", built, part=part, replace=replace)
            assert not built.exists()
        # a view over several files has no row order (DuckDB scans them in parallel): compare as a set
        assert con.execute("SELECT list(client_id ORDER BY client_id) FROM staging.client").fetchone()[0] == [
            "C3", "C4"]
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'staging'").fetchone() == (0,)
        (sql,), = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'client'").fetchall()
    assert [p.relative_to(home).as_posix() for p in staging_files(home, "staging.client")] == [
        "staging/client/part-0000000004.parquet", "staging/client/part-0000000005.parquet"]
    assert not (home / "staging" / "client.parquet").exists()
    assert "'staging/client/*.parquet'" in sql and str(home) not in sql
    moved = tmp_path / "moved"
    home.rename(moved)
    monkeypatch.chdir(moved)
    con = duckdb.connect("warehouse.duckdb", read_only=True)
    try:
        assert con.execute("SELECT client_id FROM staging.client").fetchall() == [("C3",), ("C4",)]
    finally:
        con.close()
