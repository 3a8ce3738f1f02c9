"""A small gold.photo_features at a known version, with real PNG/JPEG bytes (test helper)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from ingest.delta import write_batch
from ingest.lake import Lake
from ingest.runlog import track


def image_bytes(i: int, fmt: str, size: int = 16) -> bytes:
    """A real PNG/JPEG; ``size`` > 16 gives incompressible noise."""
    from PIL import Image

    w, h = size + i % 7, size
    if size > 16:  # noise does not compress: a genuinely big image
        import random

        img = Image.frombytes("RGB", (w, h), random.Random(i).randbytes(w * h * 3))
    else:
        img = Image.new("RGB", (w, h), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG" if fmt == "png" else "JPEG", quality=90)
    return buf.getvalue()


def photo_rows(ids: list[int], *, big: dict[int, int] | None = None) -> pa.Table:
    """Rows of the gold.photo_features contract; ``big`` maps photo_id -> image size in pixels."""
    big = big or {}
    base = datetime(2024, 6, 1, tzinfo=timezone.utc)
    fmts = ["png" if i % 3 else "jpeg" for i in ids]
    return pa.table(
        {
            "photo_id": pa.array(ids, pa.int64()),
            "user_id": pa.array([i % 5 for i in ids], pa.int64()),
            "title": [None if i % 11 == 0 else f"photo {i} – ünïcode" for i in ids],
            "place": [["Oslo", "Lima", "Pune"][i % 3] for i in ids],
            "uploaded_at": pa.array([base + timedelta(hours=i) for i in ids], pa.timestamp("us", tz="UTC")),
            "image_sha256": [f"{i:064x}" for i in ids],
            "image_format": fmts,
            "width": pa.array([16 + i % 7 for i in ids], pa.int32()),
            "height": pa.array([16] * len(ids), pa.int32()),
            "image": pa.array([image_bytes(i, f, big.get(i, 16)) for i, f in zip(ids, fmts)], pa.binary()),
            "views": pa.array([i * 3 for i in ids], pa.int64()),
            "likes": pa.array([i for i in ids], pa.int64()),
            "unique_viewers": pa.array([i * 2 for i in ids], pa.int64()),
            "like_rate": pa.array([1 / 3 for _ in ids], pa.float64()),
            "popularity_label": ["popular" if i % 2 else "not_popular" for i in ids],
        }
    )


def make_gold(lake: Lake, ids: list[int], *, mode: str = "overwrite", big: dict[int, int] | None = None) -> int:
    """Write the rows as a tracked run (so lineage has a source run); returns the table version."""
    with track(lake, command="transform", source="bronze.photos", target="gold.photo_features") as run:
        res = write_batch(lake, "gold.photo_features", photo_rows(ids, big=big), mode=mode)  # type: ignore[arg-type]
        run.version_after = res.version
        run.rows_written = res.rows
    return res.version  # type: ignore[return-value]
