"""User-facing errors: the CLI prints these as one line and exits non-zero.

Kept free of heavy imports: ``ingest sync`` (argparse fast path) imports this module too.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

if TYPE_CHECKING:
    from pydantic_core import ValidationError

DEBUG_ENV = "LAKEHOUSE_DEBUG"


class IngestError(Exception):
    """An error the user can fix; its message says how."""

    exit_code = 2


class ConfigError(IngestError, ValueError):
    """Bad configuration: unknown layer, malformed URI, unreachable endpoint."""


class SourceError(IngestError):
    """A source could not be read at all (bad credentials, missing bucket, missing path)."""

    exit_code = 3


class TransientError(IngestError):
    """A failure that may succeed on retry (connection refused or reset, endpoint briefly unreachable)."""

    exit_code = 4


class SchemaConflict(IngestError):
    """Incoming data changes a column's type in a way that cannot be cast exactly (``ingest.conform``)."""

    def __init__(self, table: str, columns: dict[str, tuple[str, str]]) -> None:
        self.table, self.columns = table, columns
        detail = ", ".join(f"{c}: {old} -> {new}" for c, (old, new) in columns.items())
        super().__init__(f"{table}: incompatible column types ({detail})")

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled from a Dask worker to the flow: rebuilt from its own arguments, not the message
        return (type(self), (self.table, self.columns), self.__dict__)


class ConstraintViolation(IngestError):
    """Rows break a rule the table declares (a CHECK constraint, a column invariant): delta-rs
    refused the whole write, so nothing of it was committed.  Exit 2, like a ``SchemaConflict``:
    the table and the data disagree, and a retry would fail the same way."""


class StorageError(IngestError):
    """A local lake's disk refused a write: full, read-only or not writable.  Not a setting to fix
    nor a blip to retry at once: exit 1, like any other failure."""

    exit_code = 1


# Disk faults of a local lake, and what the error line says about each.
_DISK_FAULTS = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "Disk quota exceeded",
    errno.EROFS: "Read-only file system",
    errno.EACCES: "Permission denied",
    errno.EPERM: "Operation not permitted",
}
# delta-rs reports an OS failure only as text: "... Unable to copy data to file: No space left on device (os error 28)"
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")


def disk_fault(exc: BaseException) -> str | None:
    """What a local disk failure is (full, read-only, no permission), also when a native library
    (delta-rs) reports it only as text; None for anything else."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        found = _OS_ERROR_TEXT.search(str(exc))
        code = int(found.group(1)) if found else None
    return _DISK_FAULTS.get(code) if code is not None else None


def _transient_types() -> tuple[type, ...]:
    """Library errors that are network failures or commit races, by class.  A library not
    imported yet cannot have raised, so each is looked at only once loaded (``ingest sync``
    starts without them).  A database's OperationalError that escapes the sources' own
    classification (which turns bad credentials into SourceError) is a dropped connection."""
    found: list[type] = [ConnectionError, TimeoutError]
    if "botocore.exceptions" in sys.modules:
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        found += [EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError]
    if "deltalake" in sys.modules:
        from deltalake.exceptions import CommitFailedError

        found.append(CommitFailedError)
    if "sqlalchemy.exc" in sys.modules:
        from sqlalchemy.exc import InterfaceError, OperationalError

        found += [OperationalError, InterfaceError]
    return tuple(found)


def is_transient(exc: BaseException) -> bool:
    """Whether an orchestrator should retry: network and commit-conflict errors yes, data errors no.

    Sources and the lake wrap connection failures (refused, timed out, unreachable endpoint) in
    ``TransientError``; bad credentials, missing buckets and bad data are never retried.
    """
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, IngestError):
        return bool(getattr(exc, "transient", False))
    return isinstance(exc, _transient_types())


def describe_validation_error(exc: ValidationError) -> str:
    """One line for a pydantic ``ValidationError`` from loading settings."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "bad configuration: " + "; ".join(parts)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def error_line(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for any error a command ends with; never exit code 0.

    Errors the project raises say how to fix them; anything else (a bug, a library's own error)
    is named by its type so a report can be searched, and ``--debug`` shows the traceback.
    """
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, IngestError):
        return first_line(exc), int(exc.exit_code) or 1
    if _is_validation_error(exc):
        return describe_validation_error(exc), 2
    if isinstance(exc, (ValueError, OSError)):
        return first_line(exc), 1
    return f"{type(exc).__name__}: {first_line(exc)} (unexpected; rerun with --debug for the traceback)", 1


def _is_validation_error(exc: BaseException) -> TypeGuard[ValidationError]:
    """A pydantic ``ValidationError``, looked at only once pydantic is loaded (the CLI's fast
    paths start without it, and then cannot have raised one)."""
    if "pydantic_core" not in sys.modules:
        return False
    from pydantic_core import ValidationError

    return isinstance(exc, ValidationError)


def debug_enabled(argv: list[str] | None = None) -> bool:
    """``--debug`` before the command, or ``LAKEHOUSE_DEBUG=1``: show tracebacks."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return bool(argv) and "--debug" in (argv or [])


def report(exc: BaseException, *, debug: bool, redact: Callable[[str], str] | None = None) -> int:
    """Print ``exc`` as one ``error:`` line on stderr (after its traceback under --debug); returns
    the exit code."""
    message, code = error_line(exc)
    if debug and not isinstance(exc, KeyboardInterrupt):
        text = "".join(traceback.format_exception(exc))
        print(redact(text) if redact else text, file=sys.stderr, end="")
    print(f"error: {redact(message) if redact else message}", file=sys.stderr)
    return code


# -- object-storage failures: the one classifier and its hints ---------------------------------
StorageFault = Literal["unreachable", "no_bucket", "denied"]
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# Addresses inside a message (``http://127.0.0.1:40312/b``, ``10.0.0.4:9000``) are no evidence of a
# fault: a random port holding "403" once read as access denied.
_ADDRESS_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?", re.IGNORECASE)
_STATUS_403_RE = re.compile(r"(?<![\w.:/-])403(?!\w)")


def plain_text(text: str) -> str:
    """``text`` without terminal colour codes (delta-rs colours some messages)."""
    return _ANSI_RE.sub("", text)


def classify_storage_error(exc: BaseException | str) -> StorageFault | None:
    """The one classifier of object-storage failures, for reads and writes alike (deltalake /
    object_store, pyarrow, boto3, plain HTTP): which of the user's settings to check, or None."""
    low = _ADDRESS_RE.sub(" ", plain_text(exc if isinstance(exc, str) else _chain_text(exc))).lower()
    if "nosuchbucket" in low or ("bucket" in low and ("not exist" in low or "not found" in low)):
        return "no_bucket"
    if _STATUS_403_RE.search(low) or any(
        k in low
        for k in (
            "forbidden",
            "accessdenied",
            "access denied",
            "signature",
            "invalidaccesskey",
            "invalid access key",
        )
    ):
        return "denied"
    if any(
        k in low
        for k in (
            "connect",
            "dns",
            "timed out",
            "timeout",
            "error sending request",
            "resolve host",
            "unreachable",
            "connection refused",
            "could not connect",
        )
    ):
        return "unreachable"
    return None


def storage_hint(fault: StorageFault | None, *, endpoint: str | None, bucket: str | None) -> str:
    """What to check for a classified fault, as a `` - check ...`` suffix ('' when unclassified)."""
    if fault == "unreachable":
        return f" - check AWS_ENDPOINT_URL ({endpoint or 'AWS default'}) is reachable"
    if fault == "no_bucket":
        return f" - check that bucket {bucket!r} exists" if bucket else " - check that the bucket exists"
    if fault == "denied":
        return " - check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    return ""


def _chain_text(exc: BaseException) -> str:
    """The text of an error and of the errors it was raised from (boto3's codes live in ``response``)."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts.append(f"{type(cur).__name__}: {cur}")
        response = getattr(cur, "response", None)
        if isinstance(response, dict):
            parts.append(str(response.get("Error", {}).get("Code", "")))
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)
