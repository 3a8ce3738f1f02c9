"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class IngestError(Exception):
    """An error the user can fix; its message says how."""

    exit_code = 2


class ConfigError(IngestError, ValueError):
    """Bad configuration: unknown layer, malformed URI, unreachable endpoint."""


class SourceError(IngestError):
    """A source could not be read at all (bad credentials, missing bucket, missing path)."""

    exit_code = 3
