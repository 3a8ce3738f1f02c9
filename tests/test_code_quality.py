"""Lint, type check and the import layers, as `make test` and CI run them (config: pyproject.toml)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ["ingest", "transforms", "flows"]


def _run(tool: str, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = BIN / tool
    if not exe.exists():
        pytest.fail(f"{tool} is not installed in {BIN}: run `make install`")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_ruff_finds_nothing():
    out = _run("ruff", "check", "--no-cache", *PACKAGES)
    assert out.returncode == 0, out.stdout + out.stderr


def test_code_is_formatted():
    out = _run("ruff", "format", "--check", "--no-cache", *PACKAGES)
    assert out.returncode == 0, "run `ruff format ingest transforms flows`:\n" + out.stdout + out.stderr


def test_mypy_finds_nothing():
    out = _run("mypy")  # packages and options from [tool.mypy]
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_layers_are_kept():
    out = _run("lint-imports", "--no-cache")
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The contract bites: a core module importing orchestration (even inside a function) fails it."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    lake = tmp_path / "ingest" / "lake.py"
    lake.write_text(lake.read_text() + "\n\ndef _upward() -> None:\n    import flows.tasks  # noqa: F401 - the test's violation\n")
    out = _run("lint-imports", "--no-cache", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)})
    assert out.returncode != 0
    assert "ingest.lake -> flows.tasks" in out.stdout, out.stdout + out.stderr


# `# noqa: CODE - why` and `# type: ignore[code]  # why` (or `- why`)
_SAYS_WHY = re.compile(r"noqa: [A-Z0-9, ]+ - \S|type: ignore\[[-a-z, ]+\] *(#|-) *\S")


def test_every_noqa_and_type_ignore_says_why():
    bare = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if ("# noqa" in line or "# type: ignore" in line) and not _SAYS_WHY.search(line):
                    bare.append(f"{rel}:{n}: {line.strip()}")
    assert not bare, "say why after the code (`# noqa: B008 - why`):\n" + "\n".join(bare)
