"""`ingest sync`: stage a shard set onto this node's local disk (thin wrapper over sync_shards)."""

from __future__ import annotations

from typing import Optional

import typer

from ingest.cli.common import emit, state


def register(app: typer.Typer) -> None:
    @app.command("sync")
    def sync_cmd(
        ctx: typer.Context,
        src: str = typer.Argument(
            ...,
            help="Shard-set root: s3://bucket/prefix/, a local directory (./path), or lake-relative shards/DATASET/SNAPSHOT.",
        ),
        dest: str = typer.Argument(..., help="Local directory; gets manifest.json and this rank's shards."),
        rank: Optional[int] = typer.Option(
            None, "--rank", help="This rank (default: $RANK, $GROUP_RANK, $NODE_RANK, $SLURM_PROCID ... else 0).", show_default=False
        ),
        world_size: Optional[int] = typer.Option(
            None, "--world-size", help="Number of ranks sharing the set (default: $WORLD_SIZE ... else 1).", show_default=False
        ),
        split: Optional[str] = typer.Option(None, "--split", help="Only these splits, comma-separated (e.g. train,val)."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Parallel transfers (default 32)."),
        verify_local: bool = typer.Option(
            False, "--verify-local", help="Re-hash files already in DEST instead of trusting the recorded checksums."
        ),
        delete: bool = typer.Option(False, "--delete", help="Remove files in DEST that this rank's selection does not list."),
        direct_io: bool = typer.Option(
            True, "--direct-io/--buffered",
            help="Write shards with O_DIRECT (bypassing the page cache) where the filesystem allows; "
            "--buffered writes through the page cache.",
        ),
    ) -> None:
        """Copy this rank's shards to a local disk, sha256-verified while streaming; re-runs resume."""
        from ingest.sync import sync_shards

        st = state(ctx)
        res = sync_shards(
            src,
            dest,
            lake=st.lake_obj,
            rank=rank,
            world_size=world_size,
            splits=split.split(",") if split else None,
            workers=workers,
            verify_local=verify_local,
            delete=delete,
            direct_io=direct_io,
            progress=st.progress,
        )

        def human() -> None:
            rate = res.bytes / res.seconds / 2**20 if res.seconds > 0 else 0.0
            typer.echo(
                f"synced {res.files} shards (rank {res.rank}/{res.world_size}) to {res.dest}: "
                f"{res.downloaded} downloaded, {res.skipped} already there"
                + (f", {res.deleted} deleted" if res.deleted else "")
                + f", {res.bytes / 2**20:.1f} MiB in {res.seconds:.2f}s ({rate:.0f} MiB/s)"
            )

        emit(ctx, res.model_dump(mode="json"), human)
