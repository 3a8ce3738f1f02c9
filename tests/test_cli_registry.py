"""`ingest` loads only the module of the command it runs: the command map must stay complete."""

import importlib

import typer
from typer.main import get_command
from typer.testing import CliRunner

from ingest.cli import COMMAND_MODULES, COMMANDS, modules_for, main


def _commands_of(module: str) -> set[str]:
    probe = typer.Typer()
    importlib.import_module(module).register(probe)

    @probe.callback()
    def _cb() -> None:  # a callback makes typer build a group even for one command
        pass

    return set(get_command(probe).commands)  # type: ignore[attr-defined]


def test_every_command_maps_to_the_module_that_defines_it():
    defined = {cmd: mod for mod in COMMAND_MODULES for cmd in _commands_of(mod)}
    assert defined == COMMANDS


def test_command_line_selects_one_module():
    assert modules_for(["--lake", "s3://b/p", "--json", "sync", "src", "dst"]) == ["ingest.cli.sync_cmd"]
    assert modules_for(["--config", "x.yaml", "ls"]) == ["ingest.cli.lake_cmds"]
    assert modules_for(["--help"]) is None and modules_for(["bogus"]) is None
    assert modules_for(["--version"]) == []


def test_full_app_lists_every_command():
    from ingest.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in result.stdout


def test_main_in_process_runs_a_command(tmp_path, capsys):
    (tmp_path / "lake").mkdir()  # an empty lake: reading a missing one is an error
    try:
        main(["--lake", str(tmp_path / "lake"), "--json", "ls"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert capsys.readouterr().out.strip() == "[]"
