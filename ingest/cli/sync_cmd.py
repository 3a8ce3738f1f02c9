"""`ingest sync`: stage a shard set onto this node's local disk (thin wrapper over sync_shards).

Every training job starts with this command, and re-syncing a complete DEST is a few stats and
one GET, so it runs without typer and pydantic (argparse here, dataclasses in ``ingest.sync``):
importing those alone took longer than s5cmd's whole no-op sync.  Settings are loaded only when
some are in play (``--lake``/``--config``, ``LAKEHOUSE_*``, ``lakehouse.yaml``, a lake-relative
SRC); otherwise S3 access is the standard AWS variables, which is what the settings would hold.
``ingest --help`` lists the command through a pass-through typer command (``register``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import typer

    from ingest.lake import Lake
    from ingest.sync import SyncResult

HELP = "Copy this rank's shards to a local disk, sha256-verified while streaming; re-runs resume."
EPILOG = """\
DEST ends up with manifest.json and exactly this rank's shards at their manifest paths.  Files are
written under a temporary name and renamed only after their sha256 matched, so an interrupted
sync leaves nothing that looks complete; run it again to resume (it first removes the temp files
a killed run left, so they do not count against free space).  A re-sync of an unchanged DEST
transfers nothing (it trusts sizes and the recorded checksums unless --verify-local).

examples:
  ingest sync s3://bucket/shards/photo_popularity/v3/ /nvme/shards
  torchrun ... -> ingest sync SRC DEST            (rank from RANK/WORLD_SIZE)
  ingest --json sync shards/photo_popularity/v3 /nvme/shards --split train --workers 16
"""


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is below 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ingest sync", description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "src",
        metavar="SRC",
        help="shard-set root: s3://bucket/prefix/, a local directory (./path), or lake-relative shards/DATASET/SNAPSHOT",
    )
    p.add_argument("dest", metavar="DEST", help="local directory; gets manifest.json and this rank's shards")
    p.add_argument(
        "--rank", type=int, help="this rank (default: $RANK, $GROUP_RANK, $NODE_RANK, $SLURM_PROCID ... else 0)"
    )
    p.add_argument("--world-size", type=int, help="number of ranks sharing the set (default: $WORLD_SIZE ... else 1)")
    p.add_argument("--split", help="only these splits, comma-separated (e.g. train,val)")
    p.add_argument("--workers", type=_positive, help="parallel transfers (default 32)")
    p.add_argument(
        "--verify-local",
        action="store_true",
        help="re-hash files already in DEST instead of trusting the recorded checksums",
    )
    p.add_argument(
        "--delete", action="store_true", help="remove files in DEST that this rank's selection does not list"
    )
    io = p.add_mutually_exclusive_group()
    io.add_argument(
        "--direct-io",
        dest="direct_io",
        action="store_true",
        default=True,
        help="write shards with O_DIRECT, bypassing the page cache, where the filesystem allows (default)",
    )
    io.add_argument("--buffered", dest="direct_io", action="store_false", help="write through the page cache")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout; no progress bar")
    return p


def _split_globals(argv: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    """(``--lake``/``--config``/``--json``/``--debug`` before ``sync``, the arguments after it), or None when
    the line needs the typer app (``--help``/``--version`` before the command)."""
    found: dict[str, Any] = {"lake": None, "config": None, "json": False, "debug": False}
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token.partition("=")
        if name in ("--lake", "--config"):
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i, value = i + 1, argv[i + 1]
            found[name[2:]] = value
        elif token in ("--json", "--debug"):
            found[token[2:]] = True
        elif token == "sync":
            return found, argv[i + 1 :]
        else:
            return None
        i += 1
    return None


def _lake(lake: str | None, config: str | None, src: str) -> Lake | None:
    """The lake from settings, or None when no settings are in play (see the module docstring)."""
    from ingest.aws import CONFIG_FILE_ENV, settings_in_play

    if not (lake or config or src.startswith("shards/") or settings_in_play()):
        return None
    from ingest.lake import Lake
    from ingest.settings import load_settings

    if config:
        os.environ[CONFIG_FILE_ENV] = config
    return Lake.from_settings(load_settings(lake=lake))


def run(
    argv: list[str], *, lake: str | None = None, config: str | None = None, json_out: bool = False, debug: bool = False
) -> int:
    """Parse ``argv`` (what follows ``sync``), sync, print; returns the exit code."""
    from ingest.aws import redact
    from ingest.errors import debug_enabled, report

    opts = build_parser().parse_args(argv)  # usage errors: message and exit 2, as argparse does
    json_out = json_out or opts.json
    lake_obj = None
    code = 0
    try:
        from ingest.sync import sync_shards

        lake_obj = _lake(lake, config, opts.src)
        res = sync_shards(
            opts.src,
            opts.dest,
            lake=lake_obj,
            rank=opts.rank,
            world_size=opts.world_size,
            splits=opts.split.split(",") if opts.split else None,
            workers=opts.workers,
            verify_local=opts.verify_local,
            delete=opts.delete,
            direct_io=opts.direct_io,
            progress=not json_out and sys.stderr.isatty(),
        )
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure is one line and exit != 0
        code = report(exc, debug=debug or debug_enabled(), redact=lambda text: redact(text, lake_obj))
        del exc
    if code:
        return code
    print(redact(json.dumps(res.to_dict()), lake_obj) if json_out else _human(res))
    return 0


def _human(res: SyncResult) -> str:
    rate = res.bytes / res.seconds / 2**20 if res.seconds > 0 else 0.0
    return (
        f"synced {res.files} shards (rank {res.rank}/{res.world_size}) to {res.dest}: "
        f"{res.downloaded} downloaded, {res.skipped} already there"
        + (f", {res.deleted} deleted" if res.deleted else "")
        + f", {res.bytes / 2**20:.1f} MiB in {res.seconds:.2f}s ({rate:.0f} MiB/s)"
    )


def main(argv: list[str]) -> None:
    """``ingest [--lake L] [--config F] [--json] sync ...`` without typer; returns only for
    lines the typer app must handle."""
    split = _split_globals(argv)
    if split is None:
        return
    found, rest = split
    code = run(rest, lake=found["lake"], config=found["config"], json_out=found["json"], debug=found["debug"])
    sys.stdout.flush()
    sys.exit(code)


def register(app: typer.Typer) -> None:
    """List `sync` in ``ingest --help`` and run it from the typer app (in-process callers)."""
    import typer

    from ingest.cli.common import state

    def sync_cmd(ctx: typer.Context) -> None:
        st = state(ctx)
        code = run(list(ctx.args), lake=st.lake, config=st.config, json_out=st.json, debug=st.debug)
        if code:
            raise typer.Exit(code)

    # typer reads annotations at run time; typer is imported here only, not in the module
    sync_cmd.__annotations__ = {"ctx": typer.Context, "return": None}
    app.command(
        "sync",
        help=HELP + "  See `ingest sync --help`.",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(sync_cmd)
