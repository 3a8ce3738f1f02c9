"""`ingest sync`: each guarantee of issue #6, against a local source and SeaweedFS S3.

Shard sets here are random-bytes files plus a manifest (the format `ingest shards` writes), so
these tests do not depend on the shard builder.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from ingest import sync as sync_mod
from ingest.errors import ConfigError, SourceError
from ingest.lake import Lake
from ingest.sync import (
    MANIFEST_NAME,
    STATE_NAME,
    TMP_SUFFIX,
    ShardEntry,
    SyncError,
    assign_ranks,
    resolve_rank,
    safe_relpath,
    sync_shards,
)

ROOT = Path(__file__).resolve().parents[1]
INGEST = str(Path(sys.executable).parent / "ingest")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def make_shard_set(
    root: Path,
    sizes: list[int],
    *,
    splits: list[str] | None = None,
    seed: int = 0,
    extra: list[dict] | None = None,
) -> dict:
    """Write ``len(sizes)`` random shards under ``root/<split>/`` and a manifest; return it."""
    import random

    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, size in enumerate(sizes):
        split = (splits or ["train"])[i % len(splits or ["train"])]
        rel = f"{split}/shard-{i:05d}.tar"
        data = rnd.randbytes(size)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        shards.append(
            {"path": rel, "bytes": size, "sha256": hashlib.sha256(data).hexdigest(), "split": split, "samples": 10}
        )
    manifest = {
        "dataset": "ds",
        "snapshot": "snap1",
        "format": "webdataset",
        "created_at": "2026-01-01T00:00:00+00:00",
        "tables": {"gold.photo_features": 3},
        "source_runs": [],
        "code_version": "test",
        "shards": shards + (extra or []),
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    return manifest


def upload_dir(client, bucket: str, prefix: str, root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(root).as_posix()}", Body=p.read_bytes())


def listed(dest: Path) -> set[str]:
    """Files in DEST that look complete (not hidden bookkeeping)."""
    return {
        p.relative_to(dest).as_posix()
        for p in dest.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def assert_verified(dest: Path, manifest: dict, paths: set[str]) -> None:
    by_path = {s["path"]: s for s in manifest["shards"]}
    for rel in paths:
        data = (dest / rel).read_bytes()
        assert len(data) == by_path[rel]["bytes"], rel
        assert hashlib.sha256(data).hexdigest() == by_path[rel]["sha256"], rel


class CountingOpens:
    """Counts source opens per shard path (a download = one open)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        for cls in (sync_mod.LocalSource, sync_mod.S3Source):
            orig = cls.open

            def wrapped(self_, path, _orig=orig):
                self.counts[path] += 1
                return _orig(self_, path)

            monkeypatch.setattr(cls, "open", wrapped)


def no_rehash(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("a local file was re-read for hashing")

    monkeypatch.setattr(sync_mod, "hash_file", boom)


SIZES = [300_000, 1_500_000, 70_000, 2_200_000, 1, 0, 900_000, 1_048_576, 640_000, 123_457]


# ---------------------------------------------------------------------------------------------
# planning (fast unit tests)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7, 12, 15])
def test_rank_subsets_are_disjoint_complete_and_balanced_by_bytes(world: int) -> None:
    import random

    rnd = random.Random(world)
    shards = [
        ShardEntry(path=f"s/{i}.tar", bytes=rnd.choice([1, 10, 1000, rnd.randint(0, 10**6)]), sha256="0" * 64)
        for i in range(37)
    ]
    parts = assign_ranks(shards, world)
    assert len(parts) == world
    paths = [s.path for part in parts for s in part]
    assert sorted(paths) == sorted(s.path for s in shards)  # union is the whole set
    assert len(paths) == len(set(paths))  # disjoint
    loads = [sum(s.bytes for s in part) for part in parts]
    assert max(loads) - min(loads) <= max(s.bytes for s in shards)
    assert assign_ranks(list(reversed(shards)), world) == parts  # every rank computes the same split


def test_rank_defaults_come_from_launcher_variables() -> None:
    assert resolve_rank(None, None, {}) == (0, 1)
    assert resolve_rank(None, None, {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (3, 8)
    assert resolve_rank(None, None, {"NODE_RANK": "1", "NNODES": "2"}) == (1, 2)
    assert resolve_rank(None, None, {"SLURM_PROCID": "5", "SLURM_NTASKS": "6"}) == (5, 6)
    assert resolve_rank(1, 2, {"RANK": "3", "WORLD_SIZE": "8"}) == (1, 2)  # flags win
    with pytest.raises(ConfigError, match="not in"):
        resolve_rank(None, None, {"RANK": "8", "WORLD_SIZE": "8"})
    with pytest.raises(ConfigError, match="without --world-size"):
        resolve_rank(2, None, {})
    with pytest.raises(ConfigError, match="not integers"):
        resolve_rank(None, None, {"RANK": "x", "WORLD_SIZE": "2"})


@pytest.mark.parametrize(
    "bad", ["/etc/passwd", "../escape.tar", "train/../../x", "a//b", "./a", "C:/x", "a\\b", MANIFEST_NAME, STATE_NAME, ""]
)
def test_unsafe_manifest_paths_are_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="unsafe shard path"):
        safe_relpath(bad, tmp_path)


@pytest.mark.parametrize("bad", ["/abs/shard.tar", "../outside.tar", "train/../../outside.tar", "link/shard.tar"])
def test_unsafe_path_refused_before_anything_is_written(bad: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    manifest = make_shard_set(src, [1000, 2000])
    manifest["shards"].append({"path": bad, "bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()})
    (src / MANIFEST_NAME).write_text(json.dumps(manifest))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(tmp_path / "elsewhere")  # a symlink out of DEST
    before = sorted(p.name for p in dest.iterdir())
    with pytest.raises(SyncError, match="unsafe shard path"):
        sync_shards(str(src), dest)
    assert sorted(p.name for p in dest.iterdir()) == before
    assert not (tmp_path / "outside.tar").exists() and not (tmp_path / "elsewhere").exists()


def test_free_space_is_checked_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    make_shard_set(src, [400_000, 500_000])
    monkeypatch.setattr(sync_mod, "free_bytes", lambda p: 1000)
    dest = tmp_path / "dest"
    with pytest.raises(SyncError, match="not enough disk space"):
        sync_shards(str(src), dest)
    assert not dest.exists()


# ---------------------------------------------------------------------------------------------
# local source
# ---------------------------------------------------------------------------------------------
def test_local_sync_stages_every_shard_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    manifest = make_shard_set(src, SIZES, splits=["train", "val"])
    opens = CountingOpens(monkeypatch)
    no_rehash(monkeypatch)  # verification happens while streaming: no second read

    res = sync_shards(str(src), dest, workers=3)

    paths = {s["path"] for s in manifest["shards"]}
    assert listed(dest) == paths | {MANIFEST_NAME}
    assert_verified(dest, manifest, paths)
    assert (dest / MANIFEST_NAME).read_bytes() == (src / MANIFEST_NAME).read_bytes()
    assert set(opens.counts) == paths and set(opens.counts.values()) == {1}
    assert (res.files, res.downloaded, res.skipped, res.bytes) == (len(SIZES), len(SIZES), 0, sum(SIZES))
    assert not list(dest.rglob(f"*{TMP_SUFFIX}"))
    state = json.loads((dest / STATE_NAME).read_text())["files"]
    assert set(state) == paths


def test_split_filter_and_ranks_partition_the_set(tmp_path: Path) -> None:
    src = tmp_path / "src"
    manifest = make_shard_set(src, SIZES, splits=["train", "val", "test"])
    train_val = {s["path"] for s in manifest["shards"] if s["split"] in ("train", "val")}
    got: list[set[str]] = []
    for r in range(3):
        dest = tmp_path / f"rank{r}"
        res = sync_shards(str(src), dest, rank=r, world_size=3, splits=["train", "val"])
        files = listed(dest) - {MANIFEST_NAME}
        assert res.files == len(files) and res.rank == r and res.world_size == 3
        assert_verified(dest, manifest, files)
        got.append(files)
    assert set().union(*got) == train_val
    assert sum(len(g) for g in got) == len(train_val)
    with pytest.raises(ConfigError, match="split.*holdout"):
        sync_shards(str(src), tmp_path / "x", splits=["holdout"])


def test_launcher_environment_picks_the_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    manifest = make_shard_set(src, SIZES)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = sync_shards(str(src), tmp_path / "d")
    expected = assign_ranks([ShardEntry(**s) for s in manifest["shards"]], 2)[1]
    assert (res.rank, res.world_size) == (1, 2)
    assert listed(tmp_path / "d") - {MANIFEST_NAME} == {s.path for s in expected}


def test_checksum_mismatch_is_retried_then_fails_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    manifest = make_shard_set(src, [50_000, 60_000, 70_000])
    bad = manifest["shards"][1]["path"]
    (src / bad).write_bytes(b"\0" * 60_000)  # same size, different content
    opens = CountingOpens(monkeypatch)
    monkeypatch.setattr(sync_mod.time, "sleep", lambda s: None)
    with pytest.raises(SyncError, match=f"shard {bad} failed verification after 3 attempts.*sha256"):
        sync_shards(str(src), dest, workers=1)
    assert opens.counts[bad] == sync_mod.ATTEMPTS
    assert not (dest / bad).exists()  # never renamed into place
    assert not list(dest.rglob(f"*{TMP_SUFFIX}"))
    assert not (dest / MANIFEST_NAME).exists()  # an incomplete DEST has no manifest vouching for it


def test_transient_corruption_is_retried_and_succeeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    manifest = make_shard_set(src, [200_000, 300_000])
    target = manifest["shards"][1]["path"]
    orig = sync_mod.LocalSource.open
    flipped: list[str] = []

    class Flip:
        def __init__(self, inner):
            self.inner = inner

        def readinto(self, buf):
            n = self.inner.readinto(buf)
            if n:
                buf[0] ^= 0xFF
            return n

        def close(self):
            self.inner.close()

    def flaky(self, path):
        stream, length = orig(self, path)
        if path == target and not flipped:
            flipped.append(path)
            return Flip(stream), length
        return stream, length

    monkeypatch.setattr(sync_mod.LocalSource, "open", flaky)
    monkeypatch.setattr(sync_mod.time, "sleep", lambda s: None)
    res = sync_shards(str(src), dest)
    assert flipped == [target] and res.retried == 1 and res.downloaded == 2
    assert_verified(dest, manifest, {target})


def test_resync_of_complete_dest_transfers_nothing_and_rehashes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_shard_set(src, SIZES)
    sync_shards(str(src), dest)
    opens = CountingOpens(monkeypatch)
    no_rehash(monkeypatch)
    res = sync_shards(str(src), dest)
    assert (res.downloaded, res.skipped, res.bytes) == (0, len(SIZES), 0)
    assert not opens.counts


def test_resync_repairs_only_what_is_missing_or_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    manifest = make_shard_set(src, SIZES)
    sync_shards(str(src), dest)
    paths = [s["path"] for s in manifest["shards"]]
    missing, truncated, flipped, sneaky = paths[0], paths[1], paths[3], paths[6]
    (dest / missing).unlink()
    (dest / truncated).write_bytes((dest / truncated).read_bytes()[:-10])
    data = bytearray((dest / flipped).read_bytes())
    data[5] ^= 1
    (dest / flipped).write_bytes(bytes(data))  # same size, new mtime -> re-hashed, re-downloaded
    st = os.stat(dest / sneaky)
    data = bytearray((dest / sneaky).read_bytes())
    data[7] ^= 1
    (dest / sneaky).write_bytes(bytes(data))
    os.utime(dest / sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: trusted

    opens = CountingOpens(monkeypatch)
    res = sync_shards(str(src), dest)
    assert set(opens.counts) == {missing, truncated, flipped}
    assert res.downloaded == 3 and res.skipped == len(SIZES) - 3
    assert_verified(dest, manifest, set(paths) - {sneaky})

    opens.counts.clear()
    res = sync_shards(str(src), dest, verify_local=True)  # --verify-local re-hashes everything
    assert set(opens.counts) == {sneaky} and res.downloaded == 1
    assert_verified(dest, manifest, set(paths))


def test_rename_without_state_record_is_rehashed_not_redownloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_shard_set(src, SIZES)
    sync_shards(str(src), dest)
    (dest / STATE_NAME).unlink()  # killed after the renames, before the state flush
    opens = CountingOpens(monkeypatch)
    res = sync_shards(str(src), dest)
    assert not opens.counts and res.downloaded == 0 and res.skipped == len(SIZES)
    assert set(json.loads((dest / STATE_NAME).read_text())["files"]) == {p for p in listed(dest) if p != MANIFEST_NAME}


def test_stale_files_are_kept_unless_delete(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    manifest = make_shard_set(src, SIZES)
    sync_shards(str(src), dest)
    (dest / "train" / "old-shard.tar").write_bytes(b"old")
    (dest / "notes.txt").write_text("mine")
    res = sync_shards(str(src), dest)
    assert (dest / "train" / "old-shard.tar").exists() and res.deleted == 0
    res = sync_shards(str(src), dest, rank=0, world_size=2, delete=True)
    expected = {s.path for s in assign_ranks([ShardEntry(**s) for s in manifest["shards"]], 2)[0]}
    assert listed(dest) == expected | {MANIFEST_NAME}
    assert res.deleted == 2 + len(SIZES) - len(expected)


def test_changed_manifest_replaces_dest_manifest_only_at_the_end(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_shard_set(src, [1000, 2000], seed=1)
    sync_shards(str(src), dest)
    manifest2 = make_shard_set(src, [1000, 2000, 3000], seed=2)
    bad = manifest2["shards"][2]["path"]
    (src / bad).write_bytes(b"x" * 3000)
    with pytest.raises(SyncError):
        sync_shards(str(src), dest)
    assert not (dest / MANIFEST_NAME).exists()  # the old manifest no longer vouches for DEST


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from ingest import sync as m
    orig = m.LocalSource.open
    state = {"bytes": 0}
    class Killer:
        def __init__(self, inner): self.inner = inner
        def readinto(self, buf):
            n = self.inner.readinto(buf)
            state["bytes"] += n
            if state["bytes"] > int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)
            return n
        def close(self): self.inner.close()
    m.LocalSource.open = lambda self, p: (lambda s, l: (Killer(s), l))(*orig(self, p))
    m.sync_shards(sys.argv[1], sys.argv[2], workers=1)
    """
)


def test_killed_sync_leaves_nothing_that_looks_complete_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    sizes = [3 * 2**20 + 11] * 6
    manifest = make_shard_set(src, sizes)
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(src), str(dest), str(int(3.5 * 2**20) * 2)],
        capture_output=True,
        cwd=ROOT,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    done = listed(dest)
    assert MANIFEST_NAME not in done
    assert 1 <= len(done) < len(sizes)
    assert_verified(dest, manifest, done)  # everything under a final name is complete
    assert list(dest.rglob(f"*{TMP_SUFFIX}"))  # the partial file is hidden under a temp name

    opens = CountingOpens(monkeypatch)
    res = sync_shards(str(src), dest)
    assert set(opens.counts) == {s["path"] for s in manifest["shards"]} - done
    assert res.downloaded == len(sizes) - len(done) and res.skipped == len(done)
    assert_verified(dest, manifest, listed(dest) - {MANIFEST_NAME})
    assert not list(dest.rglob(f"*{TMP_SUFFIX}"))


class _StallingS3:
    """A loopback S3 endpoint whose first shard GET sends 1 MiB and then stalls (a throttled
    source: the sync is mid-transfer for as long as we like); later GETs are served whole."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        import http.server
        import threading

        self.release = threading.Event()
        self.stalled = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                key = self.path.split("?", 1)[0].lstrip("/")
                body = objects.get(key)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if key.endswith(".tar") and not outer.stalled.is_set():
                    outer.stalled.set()
                    self.wfile.write(body[: 1 << 20])
                    self.wfile.flush()
                    outer.release.wait(120)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


# Runs inside the disk it syncs to (a real 40 MiB tmpfs in a user+mount namespace, or a 40 MiB
# quota emulated on free_bytes when namespaces are not allowed): start `ingest sync`, SIGKILL it
# mid-transfer, report the free space, sync again.  Prints one JSON line.
_FULL_DISK_DRIVER = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    dest, cmd = sys.argv[1], json.loads(sys.argv[2])
    def free():
        v = os.statvfs(dest); return v.f_bavail * v.f_frsize
    def temps():
        return [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs if f.endswith(".ingest-tmp")]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not any(os.stat(t).st_blocks * 512 >= int(sys.argv[3]) for t in temps()):
        time.sleep(0.05)
    time.sleep(0.3)  # the stalled GET: the transfer is under way, not finished
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = {"rc": first.returncode, "temps": len(temps()), "free": free()}
    again = subprocess.run(cmd, capture_output=True, text=True)
    print(json.dumps({"killed": killed, "rc": again.returncode, "stderr": again.stderr,
                      "temps_after": len(temps()),
                      "data": open(os.path.join(dest, "train/shard-00000.tar"), "rb").read().hex()
                      if again.returncode == 0 else None}))
    """
)

# The emulated disk: free space = capacity - blocks allocated under DEST (temp files included).
_EMULATED_DISK = textwrap.dedent(
    """
    import os, sys
    import ingest.sync as m
    cap, root = int(os.environ["TEST_DISK_BYTES"]), os.environ["TEST_DISK_ROOT"]
    def free_bytes(path):
        return cap - sum(os.lstat(os.path.join(r, f)).st_blocks * 512 for r, _, fs in os.walk(root) for f in fs)
    m.free_bytes = free_bytes
    from ingest.cli import main
    main(sys.argv[1:])
    """
)


def _namespace_tmpfs_works(where: Path) -> bool:
    import shutil

    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {where} && touch {where}/x"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.parametrize("disk", ["tmpfs", "emulated"])
def test_killed_cli_sync_on_a_nearly_full_disk_reclaims_its_temp_files(disk: str, tmp_path: Path) -> None:
    size, capacity = 24 << 20, 40 << 20  # one shard's temp copy + the shard do not fit together
    data = os.urandom(size)
    manifest = {"dataset": "ds", "snapshot": "s1", "shards": [
        {"path": "train/shard-00000.tar", "bytes": size, "sha256": hashlib.sha256(data).hexdigest()}]}
    server = _StallingS3({"bkt/ds/s1/manifest.json": json.dumps(manifest).encode(), "bkt/ds/s1/train/shard-00000.tar": data})
    mnt = tmp_path / "disk"
    mnt.mkdir()
    dest = mnt / "dest"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "AWS_"))}
    env.update(AWS_ENDPOINT_URL=server.url, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test-secret")
    args = ["sync", "s3://bkt/ds/s1/", str(dest), "--workers", "1", "--json"]
    try:
        if disk == "tmpfs":
            if not _namespace_tmpfs_works(mnt):
                pytest.skip("no unprivileged user+mount namespaces here; the emulated disk covers this")
            cmd = [INGEST, *args]
            runner = ["unshare", "-rm", "sh", "-c",
                      f'mount -t tmpfs -o size={capacity} tmpfs "$0" && exec "$@"', str(mnt)]
        else:
            cmd = [sys.executable, "-c", _EMULATED_DISK, *args]
            env.update(TEST_DISK_BYTES=str(capacity), TEST_DISK_ROOT=str(mnt))
            runner = []
        out = subprocess.run(
            [*runner, sys.executable, "-c", _FULL_DISK_DRIVER, str(dest), json.dumps(cmd), str(size)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
        )
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["killed"]["rc"] == -signal.SIGKILL and got["killed"]["temps"] == 1
    if disk == "tmpfs":
        assert got["killed"]["free"] < size  # without reclaiming the temp file the shard cannot fit
    assert got["rc"] == 0, got["stderr"]
    assert bytes.fromhex(got["data"]) == data and got["temps_after"] == 0


def test_running_syncs_temp_files_are_not_removed(tmp_path: Path) -> None:
    """Only unlocked temp files are stale: one a live writer holds stays."""
    import fcntl

    d = tmp_path / "train"
    d.mkdir()
    live, stale = d / f".a.tar.1{TMP_SUFFIX}", d / f".b.tar.2{TMP_SUFFIX}"
    stale.write_bytes(b"x" * 10_000)
    with open(live, "wb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.write(b"y" * 10_000)
        freed = sync_mod.clean_stale_tmp({d, tmp_path})
        assert live.exists() and not stale.exists() and freed >= 10_000


def test_lake_relative_source_on_a_local_lake(local_lake: Lake, tmp_path: Path) -> None:
    manifest = make_shard_set(Path(local_lake.path("shards", "ds", "snap1")), SIZES[:4])
    res = sync_shards("shards/ds/snap1", tmp_path / "d", lake=local_lake)
    assert res.downloaded == 4
    assert_verified(tmp_path / "d", manifest, {s["path"] for s in manifest["shards"]})


def test_missing_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no manifest.json"):
        sync_shards(str(tmp_path), tmp_path / "d")


def test_cli_json_output_is_quiet_and_complete(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_shard_set(src, SIZES[:3])
    out = subprocess.run(
        [INGEST, "--lake", str(tmp_path / "lake"), "--json", "sync", f"./{src.relative_to(tmp_path)}", "d", "--workers", "2"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert {"files", "downloaded", "skipped", "bytes", "seconds"} <= set(payload)
    assert payload["downloaded"] == 3 and payload["bytes"] == sum(SIZES[:3])
    assert out.stderr == ""
    bad = subprocess.run([INGEST, "sync", str(tmp_path / "nope"), "d"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.startswith("error: no manifest.json") and bad.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# SeaweedFS S3
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sync_bucket(s3_server) -> str:
    """One bucket for this module (each SeaweedFS bucket reserves volumes; the server has few)."""
    return s3_server.make_bucket()


@pytest.fixture
def s3_shards(s3_server, sync_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Lake, str, dict, Path]:
    """A shard set uploaded under a fresh lake's shards/ds/snap1 on SeaweedFS (signed access)."""
    import uuid

    for var in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    lake = Lake(f"s3://{sync_bucket}/lake-{uuid.uuid4().hex[:8]}", s3=s3_server.s3_settings())
    local = tmp_path / "shardset"
    manifest = make_shard_set(local, SIZES, splits=["train", "val"])
    upload_dir(s3_server.client(), sync_bucket, lake.key("shards", "ds", "snap1"), local)
    return lake, lake.path("shards", "ds", "snap1") + "/", manifest, local


@pytest.mark.integration
@pytest.mark.s3
def test_s3_sync_verified_resumable_and_ranked(s3_shards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake, uri, manifest, _ = s3_shards
    paths = {s["path"] for s in manifest["shards"]}
    opens = CountingOpens(monkeypatch)
    no_rehash(monkeypatch)
    dest = tmp_path / "dest"
    res = sync_shards(uri, dest, lake=lake, workers=4)
    assert listed(dest) == paths | {MANIFEST_NAME} and res.downloaded == len(paths)
    assert set(opens.counts.values()) == {1}
    assert_verified(dest, manifest, paths)

    opens.counts.clear()
    res = sync_shards(uri, dest, lake=lake)
    assert res.downloaded == 0 and res.bytes == 0 and not opens.counts

    victim = sorted(paths)[2]
    (dest / victim).unlink()
    res = sync_shards(uri, dest, lake=lake)
    assert set(opens.counts) == {victim} and res.downloaded == 1

    # lake-relative SRC, two ranks
    got = []
    for r in range(2):
        d = tmp_path / f"r{r}"
        sync_shards("shards/ds/snap1", d, lake=lake, rank=r, world_size=2, splits=["train"])
        got.append(listed(d) - {MANIFEST_NAME})
        assert_verified(d, manifest, got[-1])
    assert got[0].isdisjoint(got[1])
    assert got[0] | got[1] == {s["path"] for s in manifest["shards"] if s["split"] == "train"}


@pytest.mark.integration
@pytest.mark.s3
def test_s3_mismatch_and_missing_object_name_the_file(s3_server, s3_shards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake, uri, manifest, _ = s3_shards
    monkeypatch.setattr(sync_mod.time, "sleep", lambda s: None)
    c = s3_server.client()
    bad = manifest["shards"][3]
    c.put_object(Bucket=lake.location.bucket, Key=lake.key("shards", "ds", "snap1", bad["path"]), Body=b"\1" * bad["bytes"])
    with pytest.raises(SyncError, match=f"shard {bad['path']} failed verification after 3 attempts"):
        sync_shards(uri, tmp_path / "d", lake=lake)
    assert not (tmp_path / "d" / bad["path"]).exists()

    gone = manifest["shards"][0]
    c.delete_object(Bucket=lake.location.bucket, Key=lake.key("shards", "ds", "snap1", gone["path"]))
    with pytest.raises(SyncError, match=f"{gone['path']} not found"):
        sync_shards(uri, tmp_path / "d2", lake=lake, rank=0, world_size=1)


@pytest.mark.integration
@pytest.mark.s3
def test_s3_credentials_never_appear_in_output(s3_server, s3_shards, tmp_path: Path) -> None:
    lake, uri, manifest, _ = s3_shards
    env = {**os.environ, **s3_server.env()}
    ok = subprocess.run([INGEST, "--json", "sync", uri, str(tmp_path / "d")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["downloaded"] == len(manifest["shards"])
    denied = subprocess.run(
        [INGEST, "sync", uri, str(tmp_path / "d3")],
        capture_output=True, text=True, cwd=tmp_path,
        env={**env, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key + "-wrong"},
    )
    assert denied.returncode != 0
    assert "AWS_SECRET_ACCESS_KEY" in denied.stderr or "access denied" in denied.stderr.lower()
    for out in (ok.stdout, ok.stderr, denied.stdout, denied.stderr):
        assert s3_server.secret_key not in out and s3_server.access_key not in out and "X-Amz-Signature" not in out


@pytest.mark.integration
@pytest.mark.s3
def test_s3_missing_bucket_names_the_bucket_to_check(s3_server, tmp_path: Path) -> None:
    """The one storage classifier (ingest.errors) names the fault, as it does for the lake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAKEHOUSE_"))}
    env.update(s3_server.env())
    out = subprocess.run([INGEST, "sync", "s3://no-such-bucket-here/shards/ds/v1/", str(tmp_path / "d")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == SourceError.exit_code, out.stderr
    assert out.stderr.count("\n") == 1 and "check that bucket 'no-such-bucket-here' exists" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists()


def test_progress_bar_on_a_terminal_shows_rate_and_eta(tmp_path: Path) -> None:
    import pty

    src = tmp_path / "src"
    make_shard_set(src, [3 * 2**20] * 4)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [INGEST, "sync", str(src), str(tmp_path / "d"), "--workers", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=tmp_path,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate()
    os.close(master)
    tty_text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, tty_text
    assert "/s" in tty_text and "MiB" in tty_text  # transfer speed and bytes done
    assert "0:00:00" in tty_text or "-:--:--" in tty_text  # the ETA column
    assert "synced 4 shards" in out.decode()


def test_unreachable_endpoint_is_one_line_without_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNREACHABLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    out = subprocess.run([INGEST, "sync", "s3://bucket/shards/ds/snap/", str(tmp_path / "d")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 4  # TransientError: the Prefect sync task retries it
    assert out.stderr.startswith("error: cannot read s3://bucket/shards/ds/snap/manifest.json") and "AWS_ENDPOINT_URL" in out.stderr
    assert out.stderr.count("\n") == 1
    assert "very-secret-value" not in out.stderr + out.stdout and "AKIAUNREACHABLE" not in out.stderr + out.stdout
    assert not (tmp_path / "d").exists()


def test_rank_assignment_scales_to_large_manifests() -> None:
    shards = [ShardEntry(path=f"s/{i}.tar", bytes=(i * 7919) % 100_000 + 1, sha256="0" * 64) for i in range(100_000)]
    parts = assign_ranks(shards, 1024)
    loads = [sum(s.bytes for s in p) for p in parts]
    assert sum(len(p) for p in parts) == len(shards)
    assert max(loads) - min(loads) <= 100_000


@pytest.mark.integration
@pytest.mark.s3
def test_s3_credentials_from_the_aws_chain_when_no_keys_in_env(s3_server, s3_shards, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS_ACCESS_KEY_ID: credentials come from botocore's chain (shared file here, instance role on EC2)."""
    lake, uri, manifest, _ = s3_shards
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {s3_server.access_key}\naws_secret_access_key = {s3_server.secret_key}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3_server.endpoint_url, AWS_REGION="us-east-1", AWS_SHARED_CREDENTIALS_FILE=str(creds),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    out = subprocess.run([INGEST, "--json", "sync", uri, str(tmp_path / "d"), "--split", "val"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    val = {s["path"] for s in manifest["shards"] if s["split"] == "val"}
    assert json.loads(out.stdout)["downloaded"] == len(val)
    assert_verified(tmp_path / "d", manifest, val)


@pytest.mark.parametrize(
    "body, match",
    [
        (b"{not json", "not valid JSON"),
        (b'{"dataset": "ds"}', "not a shard manifest.*shards"),
        (b'{"shards": [{"path": "a.tar", "bytes": -1, "sha256": "' + b"0" * 64 + b'"}]}', "not a shard manifest.*bytes"),
        (b'{"shards": [{"path": "a.tar", "bytes": 1, "sha256": "xyz"}]}', "not a shard manifest.*64 hex"),
    ],
)
def test_malformed_manifest_is_refused_with_the_reason(body: bytes, match: str, tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_bytes(body)
    with pytest.raises(SyncError, match=match) as info:
        sync_shards(str(tmp_path), tmp_path / "d")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("mode", ["direct", "buffered", "refused"])
def test_direct_io_buffered_and_refused_writes_give_the_same_bytes(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_DIRECT writes whole aligned buffers and the tail through the page cache; a filesystem
    that refuses direct writes (EINVAL at write time) gets buffered ones, same bytes."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    chunk = sync_mod.CHUNK
    sizes = [chunk * 3, chunk * 2 + 1000, chunk + sync_mod.DIRECT_ALIGN * 3 + 7, chunk - 1, 5]
    manifest = make_shard_set(src, sizes)
    modes: list[bool] = []
    real_write = os.write

    def write(fd: int, data) -> int:
        import fcntl

        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        modes.append(direct)
        if mode == "refused" and direct:
            raise OSError(22, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(sync_mod.os, "write", write)
    res = sync_shards(str(src), dest, workers=2, direct_io=mode != "buffered")
    assert res.downloaded == len(sizes)
    assert_verified(dest, manifest, {s["path"] for s in manifest["shards"]})
    for s in manifest["shards"]:
        assert (dest / s["path"]).read_bytes() == (src / s["path"]).read_bytes()
    if mode == "direct":
        assert any(modes) and not all(modes)  # bulk direct, unaligned tails buffered
    elif mode == "buffered":
        assert not any(modes)


def test_free_bytes_matches_shutil(tmp_path: Path) -> None:
    import shutil

    assert abs(sync_mod.free_bytes(tmp_path) - shutil.disk_usage(tmp_path).free) < 64 << 20


def test_cli_sync_starts_without_typer_or_pydantic(tmp_path: Path) -> None:
    """The start-up path of `ingest sync` (every training job) imports no CLI or model framework;
    a re-sync is then as quick as s5cmd's (bench/bench_sync.py)."""
    make_shard_set(tmp_path / "src", [1000, 2000])
    code = textwrap.dedent(
        f"""
        import sys
        from ingest.cli import main
        try:
            main(["--json", "sync", {str(tmp_path / "src")!r}, {str(tmp_path / "d")!r}])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        heavy = sorted(m for m in ("typer", "click", "pydantic", "pydantic_settings", "rich", "boto3") if m in sys.modules)
        print("HEAVY", heavy, file=sys.stderr)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "AWS_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["downloaded"] == 2
    assert "HEAVY []" in out.stderr


def test_cli_sync_honours_a_settings_file(tmp_path: Path) -> None:
    """With a lakehouse.yaml in play, `ingest sync` resolves lake-relative sources through it
    (the settings path), and --help / bad arguments answer like the other commands."""
    lake_root = tmp_path / "configured-lake"
    make_shard_set(lake_root / "shards" / "ds" / "v1", [1000, 3000])
    (tmp_path / "lakehouse.yaml").write_text(f"lake: {lake_root}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    ok = subprocess.run([INGEST, "sync", "shards/ds/v1", "d", "--json"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["files"] == 2 and (tmp_path / "d" / "manifest.json").exists()
    helped = subprocess.run([INGEST, "sync", "--help"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert helped.returncode == 0 and "--world-size" in helped.stdout and "--buffered" in helped.stdout
    bad = subprocess.run([INGEST, "sync", "only-src"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "DEST" in bad.stderr
    listed = subprocess.run([INGEST, "--help"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "sync" in listed.stdout


def test_sync_runs_from_the_typer_app_too(tmp_path: Path) -> None:
    """In-process callers of the full app (tests, embedding) reach the same command."""
    from typer.testing import CliRunner

    from ingest.cli import app

    make_shard_set(tmp_path / "src", [500])
    res = CliRunner().invoke(app, ["--json", "sync", str(tmp_path / "src"), str(tmp_path / "d"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["downloaded"] == 1
    res = CliRunner().invoke(app, ["sync", str(tmp_path / "missing"), str(tmp_path / "d2")])
    assert res.exit_code == 3 and "no manifest.json" in res.stderr


def test_state_write_survives_its_temp_file_being_reaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another sync may remove our just-created temp file as stale before we lock it: the state
    file is still written (under a new temp name), not left out or raised as a transfer error."""
    from ingest.sync import state

    real, calls = state.lock_tmp, []

    def reaped_once(fd: int, path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            os.unlink(path)  # what clean_stale_tmp in another process does
        real(fd, path)

    monkeypatch.setattr(state, "lock_tmp", reaped_once)
    state.atomic_write(tmp_path / "f.json", b"{}")
    assert (tmp_path / "f.json").read_bytes() == b"{}" and len(calls) == 2 and calls[0] != calls[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
