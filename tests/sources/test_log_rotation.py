"""Rotated logs, rotated by Debian's real ``logrotate``: every line written lands exactly once,
whatever the rotation mode (rename, copytruncate, gzip right after the rotation or one later)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ingest.lake import Lake
from ingest.sources.logs import FINGERPRINT_BYTES, ingest_logs
from tests.sources.conftest import read

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _logrotate() -> str:
    exe = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if exe is None:
        pytest.fail("logrotate is not installed: run `make test-deps`")
    return exe


class App:
    """A daemon writing JSON lines to ``app.log``; it remembers every line it wrote and the line
    number the line has in the file it was written to (a rotation starts a new file)."""

    def __init__(self, d: Path) -> None:
        self.dir, self.path, self.conf = d, d / "app.log", d.parent / "logrotate.conf"
        self.n = self.line = 0
        self.written: dict[str, tuple[dict[str, Any], int]] = {}

    def write(self, k: int) -> None:
        with self.path.open("a") as fh:
            for _ in range(k):
                rec = {
                    "event_id": f"e{self.n}", "ts": (T0 + timedelta(seconds=self.n)).isoformat().replace("+00:00", "Z"),
                    "user_id": self.n % 7, "event_type": ("view", "like")[self.n % 2], "photo_id": self.n * 3,
                }
                self.n += 1
                self.line += 1
                fh.write(json.dumps(rec) + "\n")
                self.written[rec["event_id"]] = (rec, self.line)

    def blank(self) -> None:
        with self.path.open("a") as fh:
            fh.write("\n")
        self.line += 1

    def rotate(self) -> None:
        subprocess.run([_logrotate(), "-f", "-s", str(self.dir.parent / "logrotate.state"), str(self.conf)], check=True)
        self.line = 0  # a new (or truncated) app.log: the next line is line 1 of it


def _app(tmp_path: Path, options: str) -> tuple[App, Lake]:
    """``tmp_path/log/app.log``, rotated by logrotate with ``options``, and a lake beside it."""
    app = App(tmp_path / "log")
    app.dir.mkdir()
    app.conf.write_text(f'"{app.path}" {{\n  rotate 20\n  missingok\n  {options}\n}}\n')
    return app, Lake(str(tmp_path / "lake"))


def assert_every_line_once(lake: Lake, app: App, *, src: str | None = None) -> None:
    """Each line the app wrote is one row whose columns equal the line's fields, numbered as in
    the file it was written to, and read from one of the rotated names of that file under ``src``."""
    rows = read(lake, "bronze.events")
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} lines loaded twice"
    assert set(ids) == set(app.written), f"{len(set(app.written) - set(ids))} lines never loaded"
    for r in rows:
        rec, line = app.written[r["event_id"]]
        assert r["ts"] == datetime.fromisoformat(rec["ts"].replace("Z", "+00:00"))
        assert {k: r[k] for k in ("event_id", "user_id", "event_type", "photo_id")} == {k: v for k, v in rec.items() if k != "ts"}
        assert r["_source_line"] == line, r
        folder, name = r["_source_file"].rsplit("/", 1)
        assert name.startswith("app.log") and folder == (src or str(app.dir))
    # the quarantine table exists from the first run (empty for a clean source): nothing in it
    assert lake.delta_table("bronze.events_quarantine").to_pyarrow_dataset().count_rows() == 0


MODES = {
    "rename": "create",
    "rename-gzip": "create\n  compress",
    "rename-delaycompress": "create\n  compress\n  delaycompress",
    "copytruncate": "copytruncate",
    "copytruncate-gzip": "copytruncate\n  compress",
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_logrotate_every_line_lands_once(tmp_path: Path, mode: str) -> None:
    app, lake = _app(tmp_path, MODES[mode])
    d = app.dir

    def ingest() -> None:
        ingest_logs(lake, str(d))

    app.write(300)
    ingest()
    app.write(200)  # not read before the rotation: found in app.log.1 (or .1.gz) at the offset
    app.rotate()
    app.write(150)
    ingest()
    app.write(100)
    app.rotate()
    app.rotate()  # the new app.log is rotated before any ingest saw it
    app.write(1)  # a file shorter than the fingerprint length...
    ingest()
    app.write(40)  # ...that grows past it later
    assert app.path.stat().st_size > FINGERPRINT_BYTES
    ingest()
    app.rotate()  # fully read, then renamed (and gzipped): not loaded again
    app.write(7)
    ingest()
    ingest()
    app.rotate()
    ingest()
    assert_every_line_once(lake, app)
    assert len(list(d.glob("app.log.*"))) == 5
    if "gzip" in mode or "delay" in mode:
        assert list(d.glob("app.log.*.gz"))
    again = ingest_logs(lake, str(d))
    assert (again.rows_written, again.rows_quarantined) == (0, 0)


def test_gzip_of_a_file_already_read_is_not_loaded_again(local_lake: Lake, tmp_path: Path) -> None:
    d = tmp_path / "log"
    d.mkdir()
    app = App(d)
    app.write(50)
    assert ingest_logs(local_lake, str(d)).rows_written == 50
    with app.path.open("rb") as src, gzip.open(d / "app.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    app.path.unlink()
    res = ingest_logs(local_lake, str(d))
    assert (res.rows_written, res.skipped) == (0, 1)
    assert_every_line_once(local_lake, app)


def test_short_file_that_grows_is_read_once(local_lake: Lake, tmp_path: Path) -> None:
    d = tmp_path / "log"
    d.mkdir()
    app = App(d)
    app.write(1)
    assert app.path.stat().st_size < FINGERPRINT_BYTES
    assert ingest_logs(local_lake, str(d)).rows_written == 1
    app.write(30)
    res = ingest_logs(local_lake, str(d))
    assert res.rows_written == 30
    app.path.rename(d / "app.log.1")
    assert ingest_logs(local_lake, str(d)).rows_written == 0
    assert_every_line_once(local_lake, app)


def test_truncated_file_with_the_same_first_line_is_new(local_lake: Lake, tmp_path: Path) -> None:
    """copytruncate of a text log whose first line is always the same: the truncated file is new
    content (read from 0), even once it has grown past the old offset; the copy is not re-read."""
    d = tmp_path / "log"
    d.mkdir()
    f = d / "app.log"
    pattern = r"^(?P<message>.*)$"

    def load() -> int:
        return ingest_logs(local_lake, str(d), table="bronze.txt", format="text", pattern=pattern).rows_written

    f.write_text("starting\n" + "".join(f"old {i}\n" for i in range(5)))
    assert load() == 6
    shutil.copy(f, d / "app.log.1")
    f.write_text("starting\nnew 0\n")  # truncated, then the app starts again: shorter than before
    assert load() == 2
    with f.open("a") as fh:
        fh.write("".join(f"new {i}\n" for i in range(1, 20)))  # grown past the old offset
    assert load() == 19
    rows = read(local_lake, "bronze.txt", ["message", "_source_line", "_source_file"])
    old = sorted((r["_source_line"], r["message"]) for r in rows if r["message"].startswith("old"))
    new = sorted((r["_source_line"], r["message"]) for r in rows if r["message"].startswith("new"))
    assert old == [(i + 2, f"old {i}") for i in range(5)]
    assert new == [(i + 2, f"new {i}") for i in range(20)]
    assert sorted(r["_source_line"] for r in rows if r["message"] == "starting") == [1, 1]


PATH_IDENTITY_COMMIT = "ba8a69b"  # the last version that named a log file by its path


def _path_identity_ingest_logs():
    """``ingest_logs`` as released before files were named by content (from git history)."""
    root = Path(__file__).resolve().parents[2]
    src = subprocess.run(
        ["git", "show", f"{PATH_IDENTITY_COMMIT}:ingest/sources/logs.py"], cwd=root, capture_output=True, text=True
    )
    if src.returncode != 0:
        pytest.skip(f"needs the git history of commit {PATH_IDENTITY_COMMIT}: {src.stderr.strip()}")
    # the commit helpers it imported from ingest.sources live in ingest.delta now
    code = src.stdout.replace("    ensure_table,\n", "", 1).replace("    with_commit_retry,\n", "", 1)
    code = code.replace(
        "from ingest.runlog import track\n", "from ingest.runlog import track\nfrom ingest.delta import ensure_table, with_commit_retry\n", 1
    )
    mod = types.ModuleType("logs_by_path")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    try:
        exec(compile(code, "logs_by_path.py", "exec"), mod.__dict__)  # noqa: S102 - our own old source
    finally:
        del sys.modules[mod.__name__]
    return mod.ingest_logs


def test_lake_written_by_path_identity_is_not_read_again(tmp_path: Path) -> None:
    old_ingest_logs = _path_identity_ingest_logs()
    app, lake = _app(tmp_path, "create\n  compress\n  delaycompress")
    d = app.dir
    app.write(120)
    app.rotate()
    app.write(80)
    app.rotate()  # app.log.2.gz, app.log.1
    app.write(60)
    app.blank()  # the old run ends on a blank line
    old = old_ingest_logs(lake, str(d))
    assert old.rows_written == 260
    res = ingest_logs(lake, str(d))
    assert (res.rows_written, res.skipped, res.bytes_read) == (0, 3, 0)
    app.write(5)  # unread, then the file is renamed: found by content in app.log.1
    app.rotate()
    app.write(3)
    res = ingest_logs(lake, str(d))
    assert res.rows_written == 8
    assert_every_line_once(lake, app)
    assert ingest_logs(lake, str(d)).rows_written == 0


def test_two_files_with_the_same_first_line_and_size_are_both_read(local_lake: Lake, tmp_path: Path) -> None:
    d = tmp_path / "log"
    d.mkdir()
    (d / "a.log").write_text("starting\n" + "".join(f"a{i:03d}\n" for i in range(300)))
    assert ingest_logs(local_lake, str(d), table="bronze.txt", format="text").rows_written == 301
    (d / "b.log").write_text("starting\n" + "".join(f"b{i:03d}\n" for i in range(300)))  # same size as a.log
    assert ingest_logs(local_lake, str(d), table="bronze.txt", format="text").rows_written == 301
    again = ingest_logs(local_lake, str(d), table="bronze.txt", format="text")
    assert (again.rows_written, again.skipped) == (0, 2)
    rows = read(local_lake, "bronze.txt", ["message", "_source_file", "_source_line"])
    assert sorted((Path(r["_source_file"]).name, r["_source_line"], r["message"]) for r in rows) == sorted(
        [(n, 1, "starting") for n in ("a.log", "b.log")]
        + [(f"{n}.log", i + 2, f"{n}{i:03d}") for n in "ab" for i in range(300)]
    )


def test_large_gzip_renamed_is_known_by_its_head(local_lake: Lake, tmp_path: Path) -> None:
    """A .gz larger than the part read for its fingerprint (64 KiB compressed) is still known."""
    import random

    d = tmp_path / "log"
    d.mkdir()
    rng = random.Random(7)
    lines = "".join(json.dumps({"event_id": f"g{i}", "blob": rng.randbytes(48).hex()}) + "\n" for i in range(3000))
    with gzip.open(d / "app.log.1.gz", "wt") as fh:
        fh.write(lines)
    assert (d / "app.log.1.gz").stat().st_size > 64 << 10
    assert ingest_logs(local_lake, str(d)).rows_written == 3000
    (d / "app.log.1.gz").rename(d / "app.log.2.gz")
    again = ingest_logs(local_lake, str(d))
    assert (again.rows_written, again.skipped) == (0, 1)


@pytest.mark.integration
@pytest.mark.s3
def test_logrotate_mirrored_to_s3(s3_server, s3_lake: Lake, tmp_path: Path) -> None:
    """The same rotations seen through an S3 prefix (objects replaced as the directory changes)."""
    app, _ = _app(tmp_path, "create\n  compress\n  delaycompress")
    bucket = s3_lake.location.bucket
    client = s3_server.client()
    src = f"s3://{bucket}/raw/log"

    def ingest() -> None:
        keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="raw/log/").get("Contents", [])}
        for p in app.dir.iterdir():
            client.upload_file(str(p), bucket, f"raw/log/{p.name}")
            keys.discard(f"raw/log/{p.name}")
        for k in keys:
            client.delete_object(Bucket=bucket, Key=k)
        ingest_logs(s3_lake, src)

    app.write(300)
    ingest()
    app.write(200)
    app.rotate()
    app.write(1)
    ingest()
    app.write(40)
    app.rotate()
    app.rotate()
    ingest()
    ingest()
    assert_every_line_once(s3_lake, app, src=src)


def test_path_identity_lake_new_file_at_the_old_path_is_read_from_0(tmp_path: Path) -> None:
    """Rotated after the last run of the path-named version: the new app.log is not read from the
    old file's offset (which falls mid-line in it)."""
    old_ingest_logs = _path_identity_ingest_logs()
    app, lake = _app(tmp_path, "create")
    app.write(100)
    assert old_ingest_logs(lake, str(app.dir)).rows_written == 100
    app.rotate()
    app.write(120)  # longer lines than before (e-numbers grew), so offset 100 lines in is mid-line
    (app.dir / "app.log.1").unlink()  # only the new file is left to read
    old_ids = [k for k in app.written if int(k[1:]) < 100]
    res = ingest_logs(lake, str(app.dir))
    assert res.rows_written == 120
    rows = read(lake, "bronze.events", ["event_id", "_source_line"])
    new = sorted((r["_source_line"], r["event_id"]) for r in rows if r["event_id"] not in old_ids)
    assert new == [(i + 1, f"e{100 + i}") for i in range(120)]
