"""ZIP archives of statements, as banks ship them: extracted safely, then each member is read on its own.

Safety: member names must be relative paths without '..' (no path traversal), encrypted members are refused,
and sizes are checked both from the headers and while streaming (headers can lie): a member above
``MAX_MEMBER_BYTES``, an archive above ``MAX_TOTAL_BYTES`` or a compression ratio above ``MAX_RATIO``
(zip bomb) stops with an error naming the archive and member. Nested archives are not expanded.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from clientbase.errors import ParseError
from sources import bank_xlsx

MAX_MEMBER_BYTES = 1 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_RATIO = 200
MAX_MEMBERS = 10_000
_CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    with path.open("rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return False
    return zipfile.is_zipfile(path) and not bank_xlsx.is_workbook(path)


def _safe_name(name: str, archive: str) -> PurePosixPath:
    normalised = name.replace("\\", "/")
    parts = PurePosixPath(normalised).parts
    if not parts or normalised.startswith("/") or ".." in parts or ":" in parts[0]:
        raise ParseError(f"archive member {name!r} has an unsafe path (absolute or with '..'); refusing the "
                         "archive", path=archive)
    return PurePosixPath(*parts)


def extract(path: Path, target: Path) -> list[tuple[Path, str]]:
    """Extract every file member into ``target``; return (extracted path, member name), in archive order.

    ``target`` is filled completely or not at all (a partial extraction is removed).
    """
    archive = str(path)
    done = target / ".complete"
    try:
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) > MAX_MEMBERS:
                raise ParseError(f"archive has {len(members)} members (more than {MAX_MEMBERS})", path=archive)
            names = [(info, _safe_name(info.filename, archive)) for info in members]
            if done.exists():
                return [(target / name, info.filename) for info, name in names]
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            total = 0
            for info, name in names:
                where = f"{archive}!{info.filename}"
                if info.flag_bits & 0x1:
                    raise ParseError("encrypted archive members are not supported; unpack it first", path=where)
                if info.file_size > MAX_MEMBER_BYTES or (
                        info.compress_size and info.file_size > (1 << 20)
                        and info.file_size / info.compress_size > MAX_RATIO):
                    raise ParseError(f"member declares {info.file_size} bytes from {info.compress_size} "
                                     "compressed: refused as a possible zip bomb", path=where)
                dest = target / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, dest.open("wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        total += len(chunk)
                        if written > max(info.file_size, 0) or written > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
                            raise ParseError("member expands beyond its declared or allowed size: refused as "
                                             "a possible zip bomb", path=where)
                        out.write(chunk)
            done.touch()
            return [(target / name, info.filename) for info, name in names]
    except zipfile.BadZipFile as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ParseError(f"damaged ZIP archive ({exc})", path=archive) from None
    except ParseError:
        shutil.rmtree(target, ignore_errors=True)
        raise
