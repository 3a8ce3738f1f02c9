"""Commands for reproducible training data: snapshot create|list|show|drop, vacuum, optimize, shards build."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ingest.cli.common import emit, state
from ingest.cli.help import examples


def _parse_split(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, frac = part.partition("=")
        try:
            out[name.strip()] = float(frac)
        except ValueError:
            raise typer.BadParameter(f"bad split {part!r}: write name=fraction, e.g. train=0.9,val=0.1") from None
    return out


def register(app: typer.Typer) -> None:
    snap_app = typer.Typer(help="Pin table versions under a name (Delta time travel).", no_args_is_help=True)
    shards_app = typer.Typer(help="Build training shard sets from a snapshot.", no_args_is_help=True)
    app.add_typer(snap_app, name="snapshot")
    app.add_typer(shards_app, name="shards")

    @snap_app.command(
        "create",
        epilog=examples(
            "ingest snapshot create train-2024-06",
            'ingest snapshot create q3 --tables gold.photo_features --note "Q3 eval"',
        ),
    )
    def create_cmd(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Unique snapshot name, e.g. train-2024-06"),
        tables: str | None = typer.Option(None, "--tables", help="Comma-separated tables (default: all gold tables)"),
        note: str | None = typer.Option(None, "--note", help="Free text stored with the snapshot"),
    ) -> None:
        """Pin the current version of the tables under NAME (metadata only, no data copied)."""
        from ingest.snapshots import create_snapshot

        names = [t.strip() for t in tables.split(",") if t.strip()] if tables else None
        snap = create_snapshot(state(ctx).lake_obj, name, tables=names, note=note)
        emit(
            ctx,
            snap.payload(),
            lambda: typer.echo(
                f"snapshot {snap.name}: " + ", ".join(f"{t}@{v}" for t, v in sorted(snap.tables.items()))
            ),
        )

    @snap_app.command("list", epilog=examples("ingest snapshot list", "ingest --json snapshot list"))
    def list_cmd(ctx: typer.Context) -> None:
        """List snapshots, oldest first."""
        from ingest.snapshots import list_snapshots

        snaps = list_snapshots(state(ctx).lake_obj)

        def human() -> None:
            if not snaps:
                typer.echo("(no snapshots)")
                return
            t = Table()
            for col in ("name", "created_at", "tables"):
                t.add_column(col)
            for s in snaps:
                t.add_row(s.name, s.created_at.isoformat(), ", ".join(f"{k}@{v}" for k, v in sorted(s.tables.items())))
            Console().print(t)

        emit(ctx, [s.payload() for s in snaps], human)

    @snap_app.command("show", epilog=examples("ingest snapshot show train-2024-06"))
    def show_cmd(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
        """Show one snapshot's pinned table versions."""
        from ingest.snapshots import get_snapshot

        snap = get_snapshot(state(ctx).lake_obj, name)

        def human() -> None:
            typer.echo(f"{snap.name}  created {snap.created_at.isoformat()}")
            for t, v in sorted(snap.tables.items()):
                typer.echo(f"  {t}  version {v}")

        emit(ctx, snap.payload(), human)

    @snap_app.command("drop", epilog=examples("ingest snapshot drop train-2024-06"))
    def drop_cmd(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
        """Drop a snapshot; vacuum may then delete the files only it kept."""
        from ingest.snapshots import drop_snapshot

        snap = drop_snapshot(state(ctx).lake_obj, name)
        emit(ctx, {"dropped": snap.name, "tables": snap.tables}, lambda: typer.echo(f"dropped snapshot {snap.name}"))

    @app.command(
        "vacuum", epilog=examples("ingest vacuum --dry-run", "ingest vacuum --tables bronze.images --retain-hours 336")
    )
    def vacuum_cmd(
        ctx: typer.Context,
        retain_hours: float = typer.Option(
            168, "--retain-hours", help="Keep files removed less than this many hours ago (at least 168 unless --force)"
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be deleted"),
        tables: str | None = typer.Option(None, "--tables", help="Comma-separated tables (default: all)"),
        force: bool = typer.Option(
            False, "--force", help="Allow --retain-hours below 168: readers of older versions may fail mid-read"
        ),
    ) -> None:
        """Delete old data files, except those a pinned snapshot still needs; files no commit ever
        named (a killed writer's) once they are a day old."""
        from ingest.snapshots import vacuum

        names = [t.strip() for t in tables.split(",") if t.strip()] if tables else None
        res = vacuum(state(ctx).lake_obj, retain_hours=retain_hours, dry_run=dry_run, tables=names, force=force)
        verb = "would delete" if dry_run else "deleted"
        emit(
            ctx,
            res.payload(),
            lambda: typer.echo(
                f"{verb} {res.files_deleted} file(s); "
                + "; ".join(
                    f"{t.table}: {len(t.deleted)} ({len(t.pinned_versions)} pinned version(s))" for t in res.tables
                )
            ),
        )

    @app.command("optimize", epilog=examples("ingest optimize", "ingest optimize bronze.images --z-order"))
    def optimize_cmd(
        ctx: typer.Context,
        tables: list[str] | None = typer.Argument(None, help="Tables to compact (default: every table)"),
        z_order: bool = typer.Option(
            False, "--z-order", help="Also order rows by the lookup column (sha256, event time): rewrites every file"
        ),
        target_size: int | None = typer.Option(
            None, "--target-size", help="Bytes per compacted file (default: Delta's)"
        ),
    ) -> None:
        """Compact small files, write a checkpoint and clean up old log entries; snapshots keep working."""
        from ingest.optimize import optimize

        res = optimize(state(ctx).lake_obj, tables=tables or None, z_order=z_order, target_size=target_size)
        emit(
            ctx,
            res.payload(),
            lambda: typer.echo(
                "; ".join(f"{t.table}: {t.files_before} -> {t.files_after} file(s)" for t in res.tables) or "no tables"
            ),
        )

    @shards_app.command(
        "build",
        epilog=examples(
            "ingest shards build photos --table gold.photo_features --snapshot v1",
            "ingest shards build photos --table gold.x --snapshot v1 --format mds",
        ),
    )
    def build_cmd(
        ctx: typer.Context,
        dataset: str = typer.Argument(..., help="Dataset name (the shard set goes to <lake>/shards/DATASET/SNAPSHOT/)"),
        table: str = typer.Option(..., "--table", help="Source table, e.g. gold.photo_features"),
        snapshot: str = typer.Option(..., "--snapshot", help="Snapshot that pins the table version"),
        fmt: str = typer.Option("webdataset", "--format", help="webdataset | mds | parquet"),
        key: str | None = typer.Option(
            None, "--key", help="Unique sample key column (default: first column ending in _id)"
        ),
        split: str = typer.Option("train=0.9,val=0.1", "--split", help="name=fraction,... summing to 1"),
        shard_size: str = typer.Option("256MB", "--shard-size", help="Target bytes per shard, e.g. 256MB"),
        seed: int = typer.Option(0, "--seed", help="Salt for the split hash and the in-split order"),
        engine: str = typer.Option("local", "--engine", help="local | spark"),
    ) -> None:
        """Write a deterministic shard set with manifest.json and SHA256SUMS."""
        from transforms.shards import build_shards

        st = state(ctx)
        res = build_shards(
            st.lake_obj,
            dataset,
            table=table,
            snapshot=snapshot,
            format=fmt,  # type: ignore[arg-type]  # build_shards refuses an unknown format/engine itself
            key=key,
            split=_parse_split(split),
            shard_size=shard_size,
            seed=seed,
            engine=engine,  # type: ignore[arg-type]  # build_shards refuses an unknown engine itself
            progress=st.progress,
            spark_master=st.settings.spark_master if engine == "spark" else None,
        )
        emit(
            ctx,
            res.payload(),
            lambda: typer.echo(f"wrote {res.shards} shard(s), {res.samples} samples, {res.bytes} bytes to {res.uri}"),
        )
