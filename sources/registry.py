"""The one place readers are registered. Detection is by content, never by file extension.

``detect(path, kind)`` returns the reader module whose ``sniff`` accepts the file's first bytes; a file nobody
recognises is a clear error naming the file and what was tried.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from clientbase.errors import UnknownFormatError
from sources import bank_csv, bank_xlsx, camt, crm, mt940, ofx, onec

READERS: tuple[ModuleType, ...] = (camt, ofx, mt940, onec, bank_xlsx, bank_csv, crm)
HEAD_BYTES = 65536


def detect(path: Path, kind: str) -> ModuleType:
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head.strip():
        raise UnknownFormatError("file is empty", path=str(path))
    candidates = [r for r in READERS if r.KIND == kind]
    for reader in candidates:
        if reader.sniff(head, path.name):
            return reader
    tried = ", ".join(r.NAME for r in candidates)
    hint = ""
    if kind == "bank":
        hint = " " + bank_csv.explain_bytes(head)
    raise UnknownFormatError(f"unrecognised {kind} file format (tried: {tried}).{hint}", path=str(path))
