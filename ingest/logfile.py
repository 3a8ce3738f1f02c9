"""Where the JVM's, Prefect's and native libraries' own output goes: a log file, not the terminal.

Spark prints Ivy resolution and WARN lines, Prefect its server, task states and tracebacks, and
delta-rs Rust panic messages of its worker threads; a person running ``ingest`` sees only the
project's progress, summary and one-line errors.  One file per command run under
``~/.cache/lakehouse/logs`` (``$XDG_CACHE_HOME``, or ``LAKEHOUSE_LOG_DIR``); the newest ``KEEP``
are kept, and a command that wrote nothing there leaves none.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

LOG_DIR_ENV = "LAKEHOUSE_LOG_DIR"
PREFECT_LOGGING_ENV = "PREFECT_LOGGING_SETTINGS_PATH"
KEEP = 30

_current: Path | None = None


def log_dir() -> Path:
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lakehouse" / "logs"


def log_file() -> Path:
    """This process's log file, created on first use (older ones beyond ``KEEP`` are removed)."""
    global _current
    if _current is None:
        root = log_dir()
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        _current = root / f"ingest-{stamp}-{os.getpid()}.log"
        _current.touch()
        for old in sorted(root.glob("ingest-*"), key=_mtime)[: -2 * KEEP]:
            old.unlink(missing_ok=True)  # a run's .log and its Prefect .yml
    return _current


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # another command removed its (empty) log meanwhile
        return 0.0


def current_log_file() -> Path | None:
    """The log file this process wrote to, if it wrote anything."""
    try:
        return _current if _current is not None and _current.stat().st_size > 0 else None
    except OSError:
        return None


def native_stderr_to_log() -> bool:
    """For the rest of the process, what native code writes on file descriptor 2 goes to the log
    file, while Python's ``sys.stderr`` (progress, the one-line error, --debug tracebacks) keeps
    the terminal.

    delta-rs' worker threads print Rust panic messages there when a write fails (a full or
    read-only disk: "thread 'tokio-rt-worker' panicked ... Already shut down"), and child
    processes inherit it.  Best effort: False (and nothing changed) when it cannot be set up.
    """
    try:
        target = os.open(log_file(), os.O_WRONLY | os.O_APPEND)
    except OSError:
        return False
    try:
        terminal = os.dup(2)
        python_stderr = open(
            terminal, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace"
        )
        sys.stderr.flush()
        os.dup2(target, 2)
    except (OSError, AttributeError, ValueError):  # no fd 2 (closed by the caller), or a replaced sys.stderr
        os.close(target)
        return False
    os.close(target)
    sys.stderr = python_stderr
    return True


def drop_empty_log() -> None:
    """Remove this process's log file if nothing was written to it (most commands)."""
    if _current is not None and current_log_file() is None:
        _current.unlink(missing_ok=True)


@contextmanager
def native_output_to_log() -> Iterator[Path]:
    """Point file descriptors 1 and 2 at the log file while a child process (the Spark JVM) starts.

    The child keeps them for its whole life, so its output never reaches the terminal; this
    process gets its own descriptors back when the block ends.
    """
    path = log_file()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for d in (fd, *saved):
            os.close(d)


def prefect_logs_to_file() -> Path | None:
    """Make Prefect (this process and its temporary server) log to the log file instead of the
    console: a copy of Prefect's own logging.yml whose console handlers are file handlers.

    Call before ``import prefect``; a ``PREFECT_LOGGING_SETTINGS_PATH`` the user set wins.
    Returns the config written, or None.
    """
    import importlib.util

    import yaml

    if os.environ.get(PREFECT_LOGGING_ENV) or "prefect" in sys.modules:
        return None
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        return None
    default = Path(list(spec.submodule_search_locations)[0]) / "logging" / "logging.yml"
    config = yaml.safe_load(default.read_text())
    for name in ("console", "debug"):
        handler = config.get("handlers", {}).get(name)
        if handler is not None:
            config["handlers"][name] = {
                "level": handler.get("level", 0),
                "class": "logging.FileHandler",
                "formatter": handler.get("formatter", "standard"),
                "filename": str(log_file()),
                "encoding": "utf-8",
            }
    out = log_file().with_suffix(".prefect-logging.yml")
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    os.environ[PREFECT_LOGGING_ENV] = str(out)
    return out
