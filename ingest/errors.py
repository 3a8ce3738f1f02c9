"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class IngestError(Exception):
    """An error the user can fix; its message says how."""

    exit_code = 2


class ConfigError(IngestError, ValueError):
    """Bad configuration: unknown layer, malformed URI, unreachable endpoint."""


class SourceError(IngestError):
    """A source could not be read at all (bad credentials, missing bucket, missing path)."""

    exit_code = 3


class TransientError(IngestError):
    """A failure that may succeed on retry (connection reset, endpoint briefly unreachable)."""

    exit_code = 4


def is_transient(exc: BaseException) -> bool:
    """Whether an orchestrator should retry: network and commit-conflict errors yes, data errors no."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, IngestError):
        return bool(getattr(exc, "transient", False))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    transient_names = {
        "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
        "OperationalError", "CommitFailedError", "InterfaceError",
    }
    return name in transient_names or any(c.__name__ in transient_names for c in type(exc).__mro__)


def describe_validation_error(exc: Exception) -> str:
    """One line for a pydantic ``ValidationError`` from loading settings (duck-typed: the CLI's
    fast paths handle these without importing pydantic)."""
    parts = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "bad configuration: " + "; ".join(parts)
