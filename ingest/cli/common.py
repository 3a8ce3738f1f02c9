"""What every command shares: settings, the lake, JSON vs human output, one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer

from ingest.errors import debug_enabled
from ingest.lake import Lake, redact
from ingest.settings import CONFIG_FILE_ENV, Settings, load_settings


@dataclass
class CliState:
    lake: str | None
    json: bool
    config: str | None
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _lake: Lake | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            if self.config:
                os.environ[CONFIG_FILE_ENV] = self.config
            self._settings = load_settings(lake=self.lake)
        return self._settings

    @property
    def lake_obj(self) -> Lake:
        """The lake to read: it must exist (a misspelt --lake is an error, not an empty lake)."""
        return self.lake_for_write.require_exists()

    @property
    def lake_for_write(self) -> Lake:
        """The lake for commands that load data: a new local lake is created by the first write."""
        if self._lake is None:
            self._lake = Lake.from_settings(self.settings)
        return self._lake

    @property
    def progress(self) -> bool:
        """Progress bars only for people: not under --json, not when stderr is not a terminal."""
        return not self.json and sys.stderr.isatty()


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):  # called outside the app callback
        obj = CliState(lake=None, json=False, config=None)
    return obj


def _default(o: Any) -> Any:
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    if isinstance(o, Decimal):  # a string, exactly: a JSON number would become a float in most readers
        return format(o, "f")
    if isinstance(o, bytes):
        return f"<{len(o)} bytes>"
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    return str(o)


def to_json(obj: Any) -> str:
    return json.dumps(obj, default=_default, indent=None, sort_keys=False)


def emit(ctx: typer.Context, payload: Any, human: Callable[[], None] | None = None) -> None:
    """JSON on stdout under --json, otherwise the human renderer (or pretty JSON)."""
    if state(ctx).json or human is None:
        typer.echo(redact(to_json(payload)))
    else:
        human()


def write_page(path: Path, text: str) -> None:
    """Write a report file whole or not at all (a reader never sees half a page)."""
    from ingest.errors import ConfigError

    path = path.expanduser()
    if path.is_dir():
        raise ConfigError(f"{path} is a directory: name the HTML file to write")
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent} does not exist: create it first")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def stdout_closed_is_fine() -> Iterator[None]:
    """A reader that stops early (``ingest sql ... | head``) is not an error: when stdout's pipe
    closes, stop writing and exit 0, without a traceback or an error line (as ripgrep does).
    Later writes, including the interpreter's last flush, go to /dev/null."""
    try:
        yield
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run_cli(app: typer.Typer, argv: list[str]) -> None:
    """Run the app; every error becomes one line on stderr and a non-zero exit.

    Errors the project raises say how to fix them; anything else is named by its type, and
    ``--debug`` (or ``LAKEHOUSE_DEBUG=1``) adds the traceback.  The exit happens after the
    ``except`` block: exiting inside it would chain the error (and every frame and Arrow/Delta
    object it holds) to SystemExit until interpreter shutdown, where native thread pools are
    already gone and C++ aborts ("terminate called ...").
    """
    from ingest.errors import report

    code = 0
    try:
        app(args=argv, prog_name="ingest", standalone_mode=True)
    except SystemExit:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure is one line and exit != 0
        code = report(exc, debug=debug_enabled(argv), redact=redact)
        del exc
    if code:
        import gc

        gc.collect()  # free Arrow/Delta objects held in reference cycles now, not at shutdown
        sys.exit(code)


class _NoPandasYet:
    """A finder that makes ``import pandas`` fail, for the one question pyarrow asks."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not needed by this command", name="pandas")


def arrow_without_pandas() -> None:
    """Tell pyarrow pandas is absent, for a command that never hands it pandas objects nor reads
    nanosecond timestamps as Python values (``ingest logs``, ``ingest images``).

    pyarrow asks, on its first conversion of any Python value (``pa.scalar``, ``pa.array`` of a
    list), whether the value is a pandas object, and to answer it imports pandas: ~0.3 s of CPU,
    a tenth of an ``ingest logs`` of 1M lines and a third of a small ``ingest images``
    (apache/arrow#34994).
    Made to fail once, that question is settled as "no pandas"; anything that does need pandas
    through pyarrow (``to_pandas``, ``Table.from_pandas``) still imports it when it asks
    (``tests/test_cli_arrow_without_pandas.py`` holds pyarrow to that)."""
    if "pandas" in sys.modules:
        return  # already paid for, and pandas objects may be about
    import pyarrow as pa

    finder = _NoPandasYet()
    sys.meta_path.insert(0, finder)
    try:
        pa.scalar(0)
    finally:
        sys.meta_path.remove(finder)
