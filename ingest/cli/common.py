"""What every command shares: settings, the lake, JSON vs human output, one-line errors."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, NoReturn

import typer
from pydantic import ValidationError

from ingest.errors import ConfigError, IngestError, describe_validation_error
from ingest.lake import Lake, redact
from ingest.settings import CONFIG_FILE_ENV, Settings, load_settings


@dataclass
class CliState:
    lake: str | None
    json: bool
    config: str | None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            if self.config:
                os.environ[CONFIG_FILE_ENV] = self.config
            self._settings = load_settings(lake=self.lake)
        return self._settings

    @property
    def lake_obj(self) -> Lake:
        return Lake.from_settings(self.settings)

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


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def run_cli(app: typer.Typer, argv: list[str]) -> None:
    """Run the app; user errors become one line on stderr and a non-zero exit.

    The exit happens after the ``except`` block: exiting inside it would chain the error (and
    every frame and Arrow/Delta object it holds) to SystemExit until interpreter shutdown,
    where native thread pools are already gone and C++ aborts ("terminate called ...").
    """
    message, code = None, 0
    try:
        app(args=argv, prog_name="ingest", standalone_mode=True)
    except SystemExit:
        raise
    except IngestError as exc:
        message, code = str(exc), exc.exit_code
    except ValidationError as exc:
        message, code = describe_validation_error(exc), 2
    except (ValueError, OSError) as exc:
        message, code = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__), 1
    except KeyboardInterrupt:
        message, code = "interrupted", 130
    if message is not None:
        typer.echo(f"error: {redact(message)}", err=True)
        import gc

        gc.collect()  # free Arrow/Delta objects held in reference cycles now, not at shutdown
        sys.exit(code)
