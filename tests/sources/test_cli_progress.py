"""Progress bars only for people (a terminal, not --json); every run lands in _meta.runs."""

from __future__ import annotations

import json
import os
import pty
import subprocess

from ingest.lake import Lake
from tests.sources.conftest import INGEST, cli_env, read, run_cli


def _run_in_terminal(lake: Lake, *args: str, **env: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; returns (exit code, output)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([INGEST, "--lake", lake.uri, *args], stdout=follower, stderr=follower,
                            env={**cli_env(lake), "COLUMNS": "120", "TERM": "xterm", **env})
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


def test_logs_bar_counts_files_and_lines_not_raw_bytes(local_lake: Lake, sample) -> None:
    """The logs bar moves by bytes (its ETA) but shows what a person counts: files and lines,
    and sizes in KiB/MiB, never a raw byte count such as ``48213/120334``."""
    import re

    # a commit every few lines: the run lasts long enough for the bar to be drawn while it moves
    # (the whole sample loads in well under the bar's 0.1 s refresh, and the bar is transient)
    code, out = _run_in_terminal(local_lake, "logs", str(sample.logs), INGEST_LOG_BATCH_LINES="3")
    assert code == 0, out
    assert "logs -> bronze.events" in out
    assert re.search(r"file \d+/\d+ · [\d,]+ lines", out), out
    assert re.search(r"\d+(\.\d+)?/\d+(\.\d+)? (KiB|MiB|bytes)", out), out
    total = sum(p.stat().st_size for p in sample.logs.rglob("*") if p.is_file())
    assert f"/{total}" not in out, "the bar shows a raw byte count"


def test_a_progress_unit_must_be_known() -> None:
    import pytest

    from ingest.progress import progress_bar

    with pytest.raises(ValueError, match="items' or 'bytes"):
        with progress_bar(False, "x", unit="lines"):  # type: ignore[arg-type]
            pass
