"""Write-audit-publish for the parquet marts.

1. write: every mart of a run goes to a fresh version directory ``HOME/.marts_versions/<version>/<mart>/*.parquet``;
2. audit: the caller validates that directory (the marts gate) while readers still see the old version;
3. publish: ``HOME/marts`` is a symlink switched to the new version with one atomic ``os.replace``.

A crash or failed gate before step 3 leaves ``HOME/marts`` pointing at the previous, complete version.
The last ``keep`` versions stay on disk for readers that opened files just before a switch. Where symlinks
are unavailable, the fallback is a rename swap (two renames; readers may briefly see no directory).

BI tools get ``HOME/bi.duckdb``: only the ``marts.<mart>`` views (relative paths, so they follow the link)
and ``marts.catalog``. It is rewritten beside and switched with ``os.replace`` on publish, and the pipeline
never keeps it open, so dashboards can read it while a run holds ``warehouse.duckdb``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import polars as pl

from warehouse.db import create_mart_views, replace_table

VERSIONS_DIR = ".marts_versions"
BI_CATALOG = "bi.duckdb"


def versions_root(home: Path) -> Path:
    return home / VERSIONS_DIR


def new_version_dir(home: Path, version: str) -> Path:
    target = versions_root(home) / version
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return target


def current_version_dir(home: Path) -> Path | None:
    link = home / "marts"
    if link.is_symlink():
        return (link.parent / os.readlink(link)).resolve()
    return link if link.is_dir() else None


def write_mart(version_dir: Path, mart: str, frame: pl.DataFrame, partition_by: str | None) -> dict[str, int]:
    """One parquet file per partition value (e.g. one per month) or one file; returns rows per file.

    Files are written sorted and without timestamps so that the same data gives the same bytes.
    """
    out = version_dir / mart
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    if partition_by is None or frame.is_empty():
        frame.write_parquet(out / "part-0.parquet", statistics=True)
        return {"part-0.parquet": frame.height}
    for (key,), part in frame.partition_by(partition_by, as_dict=True, maintain_order=True).items():
        name = f"{partition_by}={key}.parquet"
        part.write_parquet(out / name, statistics=True)
        written[name] = part.height
    return written


def read_mart(marts_dir: Path, mart) -> pl.DataFrame:
    """All parquet files of a mart module's folder under ``marts_dir`` (a version or the published link), typed by
    the module's SCHEMA; an empty frame with that schema when there are none."""
    return scan_mart(marts_dir, mart).collect()


def scan_mart(marts_dir: Path, mart) -> pl.LazyFrame:
    """``read_mart`` as a lazy scan: a plan reads only the columns (and, where the files' statistics tell, the
    row groups) it uses, and nothing is held between plans."""
    empty = pl.LazyFrame(schema={c: t for c, (t, _) in mart.SCHEMA.items()})
    frames = [pl.scan_parquet(f) for f in sorted((marts_dir / mart.NAME).glob("*.parquet"))]
    return pl.concat([empty, *frames], how="vertical_relaxed") if frames else empty


def link_or_copy(src: Path, target: Path) -> None:
    """Hard-link ``src`` as ``target`` (same content, no copy), or copy it on a file system without hard links."""
    try:
        os.link(src, target)
    except OSError:
        shutil.copy2(src, target)


def carry_over(version_dir: Path, previous: Path | None, mart: str, keep_file) -> int:
    """Hard-link (or copy) the previous version's files of ``mart`` that ``keep_file(name)`` keeps (backfill)."""
    if previous is None or not (previous / mart).is_dir():
        return 0
    out = version_dir / mart
    out.mkdir(parents=True, exist_ok=True)
    carried = 0
    for src in sorted((previous / mart).glob("*.parquet")):
        if keep_file(src.name) and not (out / src.name).exists():
            link_or_copy(src, out / src.name)
            carried += 1
    return carried


def publish(home: Path, version_dir: Path, keep: int = 2) -> Path:
    """Atomically point ``HOME/marts`` at ``version_dir``; prune old versions beyond ``keep``."""
    link = home / "marts"
    relative_target = os.path.relpath(version_dir, home)
    tmp = home / f".marts.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(relative_target, tmp, target_is_directory=True)
    except OSError:
        _rename_swap(link, version_dir)
    else:
        if link.exists() and not link.is_symlink():
            # an earlier fallback publish left a real directory: move it aside first
            os.replace(link, versions_root(home) / f"legacy-{os.getpid()}")
        os.replace(tmp, link)
    _prune(home, keep=keep, current=version_dir)
    return link


def _rename_swap(link: Path, version_dir: Path) -> None:
    old = link.with_name(".marts.old")
    if old.exists():
        shutil.rmtree(old)
    if link.exists():
        os.replace(link, old)
    shutil.copytree(version_dir, link, copy_function=os.link)


def _prune(home: Path, *, keep: int, current: Path) -> None:
    root = versions_root(home)
    versions = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)  # ids sort by time
    survivors = [current.resolve()] + [v.resolve() for v in versions if v.resolve() != current.resolve()][: keep - 1]
    for version in versions:
        if version.resolve() not in survivors:
            shutil.rmtree(version, ignore_errors=True)


def write_bi_catalog(path: Path, names: list[str], dictionary: pl.DataFrame) -> Path:
    """(Re)write the BI catalog file: the marts views and the data dictionary, nothing else."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp), config={"file_search_path": str(path.parent.absolute())})
    try:
        create_mart_views(con, names)
        replace_table(con, "marts.catalog", dictionary)
    finally:
        con.close()
    os.replace(tmp, path)
    return path


def discard_unpublished(home: Path) -> list[str]:
    """Remove version directories newer than the published one: leftovers of a run that was killed between
    writing its marts and publishing them (a failed run removes its own). Call it holding the HOME lock."""
    root, current = versions_root(home), current_version_dir(home)
    if not root.is_dir():
        return []
    removed = []
    for version in sorted(p for p in root.iterdir() if p.is_dir()):
        if current is None or (version.resolve() != current and version.name > current.name):
            shutil.rmtree(version, ignore_errors=True)
            removed.append(version.name)
    return removed


def discard(version_dir: Path) -> None:
    """Remove an unpublished version (failed gate)."""
    shutil.rmtree(version_dir, ignore_errors=True)
