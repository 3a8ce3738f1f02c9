"""Progress bars only for people (a terminal, not --json); every run lands in _meta.runs."""

from __future__ import annotations

import json
import os
import pty
import subprocess

from ingest.lake import Lake
from tests.sources.conftest import INGEST, cli_env, read, run_cli


def _run_in_terminal(lake: Lake, *args: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; returns (exit code, output)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([INGEST, "--lake", lake.uri, *args], stdout=follower, stderr=follower,
                            env={**cli_env(lake), "COLUMNS": "120", "TERM": "xterm"})
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return proc.wait(timeout=120), out.decode(errors="replace")


def test_progress_bar_on_a_terminal_only(local_lake: Lake, sample) -> None:
    code, out = _run_in_terminal(local_lake, "images", str(sample.images))
    assert code == 0
    assert "images -> bronze.images" in out  # the rich progress bar's label
    assert "\x1b[" in out  # drawn with terminal control codes
    quiet = run_cli(local_lake, "--json", "logs", str(sample.logs))
    assert quiet.stderr == ""  # no bar under --json (and stderr is not a terminal here)
    assert json.loads(quiet.stdout)["rows_written"] > 0
    plain = run_cli(local_lake, "tables", sample.db_url, "--source-table", "photos", "--table", "bronze.photos")
    assert plain.stderr == "" and "bronze.photos v0: 40 rows written" in plain.stdout


def test_every_run_is_logged(local_lake: Lake, sample) -> None:
    run_cli(local_lake, "logs", str(sample.logs))
    run_cli(local_lake, "logs", str(sample.logs))
    failed = run_cli(local_lake, "logs", str(sample.root / "missing"), check=False)
    assert failed.returncode == 3 and failed.stderr.startswith("error: source")
    runs = sorted(read(local_lake, "_meta.runs"), key=lambda r: r["started_at"])
    assert [r["status"] for r in runs] == ["success", "success", "failed"]
    first, second, third = runs
    assert first["command"] == "logs" and first["target"] == "bronze.events"
    assert first["source"] == str(sample.logs)
    assert first["version_before"] is None and first["version_after"] is not None
    assert first["rows_written"] > 0 and first["rows_quarantined"] == 1 and first["bytes_read"] > 0
    assert (second["rows_written"], second["skipped"], second["bytes_read"]) == (0, 3, 0)
    assert second["version_before"] == second["version_after"] == first["version_after"]
    assert "does not exist" in third["error"] and third["duration_s"] >= 0
    assert json.loads(first["details"])["files"][0]["rows"] > 0
