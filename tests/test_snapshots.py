"""Snapshots pin Delta versions; as-of reads use them; vacuum never breaks a pin."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from ingest.delta import write_batch
from ingest.errors import ConfigError
from ingest.lake import Lake
from ingest.query import run_sql
from ingest.snapshots import (
    SnapshotExists,
    create_snapshot,
    drop_snapshot,
    get_snapshot,
    list_snapshots,
    pinned_versions,
    vacuum,
)
from ingest.vacuum import VersionVacuumed


def _photos(ids: list[int], tag: str) -> pa.Table:
    return pa.table(
        {
            "photo_id": pa.array(ids, pa.int64()),
            "title": [f"{tag}-{i}" for i in ids],
            "image": [f"{tag}-bytes-{i}".encode() * 50 for i in ids],
        }
    )


def _seed(lake: Lake) -> None:
    write_batch(lake, "gold.photo_features", _photos([1, 2, 3], "v0"))  # version 0
    write_batch(lake, "gold.daily_activity", pa.table({"day": ["2024-01-01"], "events": [5]}))


def _check_lifecycle(lake: Lake) -> None:
    _seed(lake)
    snap = create_snapshot(lake, "train-1")
    # version 1 is the metadata-only commit that extends the log retention, made before pinning
    assert snap.tables == {"gold.daily_activity": 1, "gold.photo_features": 1}
    with pytest.raises(SnapshotExists):
        create_snapshot(lake, "train-1")
    # the table moves on: overwrite replaces every row
    write_batch(lake, "gold.photo_features", _photos([7, 8], "v1"), mode="overwrite")

    assert get_snapshot(lake, "train-1").tables == snap.tables
    assert [s.name for s in list_snapshots(lake)] == ["train-1"]
    now = run_sql(lake, "select photo_id from gold.photo_features order by 1").column(0).to_pylist()
    pinned = run_sql(lake, "select photo_id from gold.photo_features order by 1", as_of="train-1")
    assert now == [7, 8]
    assert pinned.column(0).to_pylist() == [1, 2, 3]

    only = create_snapshot(lake, "just-photos", tables=["gold.photo_features"])
    assert list(only.tables) == ["gold.photo_features"]
    assert only.tables["gold.photo_features"] >= 1
    with pytest.raises(ConfigError, match="does not pin gold.daily_activity"):
        run_sql(lake, "select * from gold.daily_activity", as_of="just-photos")

    dropped = drop_snapshot(lake, "train-1")
    assert dropped.name == "train-1"
    with pytest.raises(ConfigError, match="ingest snapshot list"):
        get_snapshot(lake, "train-1")
    # a dropped name can be used again
    again = create_snapshot(lake, "train-1", tables=["gold.daily_activity"])
    assert again.tables == {"gold.daily_activity": 1}
    assert sorted(s.name for s in list_snapshots(lake)) == ["just-photos", "train-1"]


def test_snapshot_lifecycle_local(local_lake: Lake) -> None:
    _check_lifecycle(local_lake)


@pytest.mark.integration
@pytest.mark.s3
def test_snapshot_lifecycle_s3(s3_lake: Lake) -> None:
    _check_lifecycle(s3_lake)


def test_bad_names_and_missing_tables(local_lake: Lake) -> None:
    with pytest.raises(ConfigError, match="no gold tables"):
        create_snapshot(local_lake, "empty")
    _seed(local_lake)
    for bad in ("12", "2024-06-01", "has space", "../x", ""):
        with pytest.raises(ConfigError, match="bad snapshot name"):
            create_snapshot(local_lake, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        create_snapshot(local_lake, "ok", tables=["gold.nope"])
    with pytest.raises(ConfigError, match="no snapshot named"):
        drop_snapshot(local_lake, "never")


def _check_vacuum_keeps_pins(lake: Lake) -> None:
    write_batch(lake, "gold.photo_features", _photos([1, 2, 3], "v0"))
    pinned_rows = lake.delta_table("gold.photo_features").to_pyarrow_table().sort_by("photo_id")
    create_snapshot(lake, "keep-me")
    write_batch(lake, "gold.photo_features", _photos([4], "v1"), mode="overwrite")  # unpinned
    v1_files = set(lake.delta_table("gold.photo_features").file_uris())
    write_batch(lake, "gold.photo_features", _photos([5], "v2"), mode="overwrite")  # current

    dry = vacuum(lake, retain_hours=0, dry_run=True)
    photos = next(t for t in dry.tables if t.table == "gold.photo_features")
    assert len(photos.deleted) == 1  # only v1's file; v0 is pinned, v2 is current

    result = vacuum(lake, retain_hours=0, force=True)
    assert result.files_deleted >= 1
    fs = lake.pyarrow_filesystem()
    for uri in v1_files:
        assert fs.get_file_info(lake.fs_path(uri)).type.name == "NotFound"
    # the pinned snapshot reads exactly what it pinned
    again = run_sql(lake, "select * from gold.photo_features order by photo_id", as_of="keep-me")
    assert again.equals(pinned_rows.select(again.column_names))
    assert run_sql(lake, "select count(*) from gold.photo_features").column(0).to_pylist() == [1]
    # the pinned table keeps its log long enough for time travel
    cfg = lake.delta_table("gold.photo_features").metadata().configuration
    assert cfg.get("delta.logRetentionDuration", "").startswith("interval 36500")

    # once dropped, the pin's files are fair game
    drop_snapshot(lake, "keep-me")
    assert "gold.photo_features" not in pinned_versions(lake)
    vacuum(lake, retain_hours=0, force=True)
    with pytest.raises(VersionVacuumed, match=r"^version 0 of gold\.photo_features was vacuumed \(1 of its"):
        run_sql(lake, "select * from gold.photo_features", as_of=0)


def test_vacuum_keeps_pinned_snapshot_readable_local(local_lake: Lake) -> None:
    _check_vacuum_keeps_pins(local_lake)


@pytest.mark.integration
@pytest.mark.s3
def test_vacuum_keeps_pinned_snapshot_readable_s3(s3_lake: Lake) -> None:
    _check_vacuum_keeps_pins(s3_lake)


def test_vacuum_rejects_negative_hours(local_lake: Lake) -> None:
    with pytest.raises(ValueError, match="retain_hours"):
        vacuum(local_lake, retain_hours=-1)


def test_cli_snapshot_commands(local_lake: Lake) -> None:
    from ingest.cli import app

    _seed(local_lake)
    runner = CliRunner()
    base = ["--lake", local_lake.uri, "--json"]
    res = runner.invoke(app, [*base, "snapshot", "create", "cli-snap", "--tables", "gold.photo_features"])
    assert res.exit_code == 0, res.output
    shown = json.loads(runner.invoke(app, [*base, "snapshot", "show", "cli-snap"]).output)
    assert shown["name"] == "cli-snap" and shown["tables"] == {"gold.photo_features": 1}
    assert "created_at" in shown
    listed = json.loads(runner.invoke(app, [*base, "snapshot", "list"]).output)
    assert [s["name"] for s in listed] == ["cli-snap"]
    pinned_files = set(local_lake.delta_table("gold.photo_features").file_uris())
    write_batch(local_lake, "gold.photo_features", _photos([8], "unpinned"), mode="overwrite")
    unpinned_files = set(local_lake.delta_table("gold.photo_features").file_uris())
    write_batch(local_lake, "gold.photo_features", _photos([9], "later"), mode="overwrite")
    current_files = set(local_lake.delta_table("gold.photo_features").file_uris())
    query = "select photo_id from gold.photo_features order by 1"
    pinned = json.loads(runner.invoke(app, [*base, "sql", query, "--as-of", "cli-snap"]).output)
    assert [r["photo_id"] for r in pinned] == [1, 2, 3]
    assert [r["photo_id"] for r in json.loads(runner.invoke(app, [*base, "sql", query]).output)] == [9]
    dup = runner.invoke(app, [*base, "snapshot", "create", "cli-snap"])
    assert dup.exit_code != 0
    fs = local_lake.pyarrow_filesystem()
    exists = lambda uris: [fs.get_file_info(local_lake.fs_path(u)).type.name == "File" for u in uris]  # noqa: E731
    everything = pinned_files | unpinned_files | current_files
    vac = json.loads(runner.invoke(app, [*base, "vacuum", "--retain-hours", "0", "--dry-run"]).output)
    assert vac["dry_run"] is True and vac["files_deleted"] == len(unpinned_files) == 1
    assert all(exists(everything)), "a dry run deletes nothing"
    res = runner.invoke(app, [*base, "vacuum", "--retain-hours", "0", "--force"])
    assert res.exit_code == 0, res.output
    assert not any(exists(unpinned_files)), "the unpinned version's file is deleted"
    assert all(exists(pinned_files | current_files)), "the pinned and current versions' files stay"
    pinned = json.loads(runner.invoke(app, [*base, "sql", query, "--as-of", "cli-snap"]).output)
    assert [r["photo_id"] for r in pinned] == [1, 2, 3]
    res = runner.invoke(app, [*base, "snapshot", "drop", "cli-snap"])
    assert res.exit_code == 0, res.output
    assert json.loads(runner.invoke(app, [*base, "snapshot", "list"]).output) == []


def _create_after_barrier(lake: Lake, out: str, barrier) -> None:
    """Create snapshot "race", meeting the other creators right before writing its row: each has
    then found no "race" yet, and they commit at once."""
    import ingest.delta

    real, met = ingest.delta.write_batch, []

    def write_after_barrier(lake_, table, *args, **kwargs):
        if str(table) == "_meta.snapshots" and not met:
            met.append(True)
            barrier.wait(timeout=120)
        return real(lake_, table, *args, **kwargs)

    ingest.delta.write_batch = write_after_barrier
    try:
        create_snapshot(lake, "race", tables=["gold.daily_activity"])
        Path(out).write_text("created")
    except SnapshotExists as exc:
        Path(out).write_text(f"exists: {exc}")


def test_concurrent_creators_of_one_name_get_one_snapshot(local_lake: Lake, tmp_path: Path) -> None:
    from tests.procs import race

    _seed(local_lake)
    create_snapshot(local_lake, "warm-up")  # the snapshots table exists: both writers append to it
    outs = [str(tmp_path / f"creator{i}") for i in range(3)]
    assert race(_create_after_barrier, [(local_lake, o) for o in outs]) == [0] * 3
    outcomes = sorted(Path(o).read_text() for o in outs)
    assert outcomes[0] == "created" and len(outcomes) == 3, outcomes
    for lost in outcomes[1:]:  # the losers were writing when the winner committed
        assert lost.startswith("exists") and "created concurrently" in lost, outcomes
    assert [s.name for s in list_snapshots(local_lake)].count("race") == 1
    rows = local_lake.delta_table("_meta.snapshots").to_pyarrow_table().to_pylist()
    assert sum(r["name"] == "race" for r in rows) == 1  # losers withdrew their rows


def _ingest(lake: Lake, *args: str):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "ingest"
    return subprocess.run([str(exe), "--lake", lake.uri, *args], capture_output=True, text=True, timeout=300)


def test_cli_vacuum_below_seven_days_is_refused_unless_forced(local_lake: Lake) -> None:
    write_batch(local_lake, "gold.photo_features", _photos([1, 2], "v0"))
    write_batch(local_lake, "gold.photo_features", _photos([3], "v1"), mode="overwrite")
    v0_files = set(local_lake.delta_table("gold.photo_features", version=0).file_uris())
    query = ["sql", "select photo_id from gold.photo_features order by 1", "--as-of", "0", "--format", "csv"]

    refused = _ingest(local_lake, "vacuum", "--retain-hours", "0")
    assert refused.returncode != 0
    assert refused.stderr.startswith("error: refused: --retain-hours 0 is below Delta's minimum of 168 h")
    assert "--force" in refused.stderr and refused.stderr.count("\n") == 1
    assert set(local_lake.delta_table("gold.photo_features", version=0).file_uris()) == v0_files
    assert all(local_lake.pyarrow_filesystem().get_file_info(local_lake.fs_path(u)).type.name == "File" for u in v0_files)
    before = _ingest(local_lake, *query)
    assert before.returncode == 0 and before.stdout.split() == ["photo_id", "1", "2"], before.stderr

    assert _ingest(local_lake, "vacuum", "--retain-hours", "0", "--dry-run").returncode == 0  # deletes nothing
    forced = _ingest(local_lake, "--json", "vacuum", "--retain-hours", "0", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["files_deleted"] == len(v0_files)

    after = _ingest(local_lake, *query)
    assert after.returncode != 0
    assert after.stderr.startswith("error: version 0 of gold.photo_features was vacuumed"), after.stderr
    assert after.stderr.count("\n") == 1 and "Parquet" not in after.stderr
    current = _ingest(local_lake, "sql", "select photo_id from gold.photo_features", "--format", "csv")
    assert current.returncode == 0 and current.stdout.split() == ["photo_id", "3"]


def test_snapshot_reads_of_vacuumed_files_name_the_version(local_lake: Lake) -> None:
    """A pin whose files were removed anyway (another engine's VACUUM): one line, not an Arrow error."""
    write_batch(local_lake, "gold.photo_features", _photos([1, 2], "v0"))
    snap = create_snapshot(local_lake, "pinned")
    version = snap.tables["gold.photo_features"]
    write_batch(local_lake, "gold.photo_features", _photos([3], "v1"), mode="overwrite")
    # Delta's own vacuum knows nothing of our pins (as Spark's VACUUM would not)
    local_lake.delta_table("gold.photo_features").vacuum(
        retention_hours=0, dry_run=False, enforce_retention_duration=False
    )
    for args in (
        ["sql", "select count(*) from gold.photo_features", "--as-of", "pinned"],
        ["shards", "build", "ds", "--table", "gold.photo_features", "--snapshot", "pinned", "--key", "photo_id"],
    ):
        out = _ingest(local_lake, *args)
        assert out.returncode != 0, args
        assert out.stderr == (
            f"error: version {version} of gold.photo_features was vacuumed (1 of its data files are deleted): "
            "read a newer version (`ingest history gold.photo_features`); pin versions "
            "you need with `ingest snapshot create`\n"
        ), args


def test_files_of_a_local_version_are_relative_to_the_table_root(local_lake: Lake) -> None:
    """deltalake gives a local table's root as file:///... and its files as plain paths: both
    must reduce to the same relative names, or a pinned file looks missing (and unprotected)."""
    from ingest.vacuum import files_of_version, missing_files

    _seed(local_lake)
    v = local_lake.delta_table("gold.daily_activity").version()
    rels = files_of_version(local_lake, "gold.daily_activity", v)
    assert rels and all(not r.startswith(("/", "file:")) for r in rels), rels
    assert missing_files(local_lake, "gold.daily_activity", v) == (v, [])
