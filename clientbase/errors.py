"""The project's own errors. Every message a user sees names the file (and record/field where there is one)
and says what to do; the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class ClientbaseError(Exception):
    """Base of every error the CLI reports as a clean one-line message."""

    exit_code = 1


class ConfigError(ClientbaseError):
    exit_code = 2


class InboxError(ClientbaseError):
    """The inbox is missing, empty, or holds a file nobody can read."""

    exit_code = 3


class ParseError(ClientbaseError):
    """A file or record cannot be parsed. Carries where, so quarantine rows and messages can say it."""

    def __init__(self, message: str, *, path: str | None = None, record: int | None = None, field: str | None = None):
        self.path = path
        self.record = record
        self.field = field
        self.reason = message
        where = ", ".join(
            p for p in (path, f"record {record}" if record is not None else None, f"field {field}" if field else None) if p
        )
        super().__init__(f"{where}: {message}" if where else message)


class NotLoaded(ClientbaseError):
    """A file loaded alongside another was rolled back because a file before it in the run failed (the run stops at
    the first file that fails, as when files are loaded one after another)."""


class UnknownFormatError(ParseError):
    """No registered reader recognises the file's content."""


class GateFailed(ClientbaseError):
    """A data-quality gate failed: nothing was published."""

    exit_code = 4

    def __init__(self, gate: str, failures: list[str], hint: str | None = None):
        self.gate = gate
        self.failures = failures
        shown = "; ".join(failures[:5]) + (f"; … and {len(failures) - 5} more" if len(failures) > 5 else "")
        super().__init__(
            f"gate '{gate}' failed ({len(failures)} check(s)): {shown}. Nothing was published; "
            "see the dq_results table in the warehouse for details." + (f" {hint}" if hint else "")
        )


class LockedError(ClientbaseError):
    exit_code = 5
