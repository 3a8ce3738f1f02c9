"""Deterministic sample sources for the demo domain (photo popularity).

`ingest run` uses these when no sources are configured, so the whole pipeline runs on a fresh
machine with no server: images on disk, JSON-lines activity logs and a SQLite photo table.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

PLACES = ["Lisbon", "Kyoto", "Reykjavik", "Nairobi", "Lima", "Oslo", "Hanoi", "Quebec"]
WORDS = ["sunset", "harbour", "market", "mountain", "street", "forest", "bridge", "portrait"]
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SampleSources:
    root: Path
    images: Path
    logs: Path
    db_path: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _draw_photo(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    bg = tuple(rng.randrange(40, 220) for _ in range(3))
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = min(size[0], x0 + rng.randrange(8, 48)), min(size[1], y0 + rng.randrange(8, 48))
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
    return img


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=88, optimize=False)
    else:
        img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def generate_sample(
    dest: str | os.PathLike[str],
    *,
    photos: int = 40,
    users: int = 12,
    days: int = 3,
    seed: int = 7,
) -> SampleSources:
    """Write images/, logs/ and photos.db under ``dest``; the same arguments give the same files.

    Includes the awkward cases a real feed has: a near-duplicate (resized, recompressed), an exact
    copy under another name, a truncated image, a malformed log line and a gzipped log file.
    """
    if photos < 3 or users < 1 or days < 1:
        raise ValueError("generate_sample needs photos >= 3, users >= 1 and days >= 1")
    rng = random.Random(seed)
    root = Path(dest)
    images = root / "images"
    logs = root / "logs"
    images.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    fixed_mtime = EPOCH.timestamp()

    rows = []
    first_img: Image.Image | None = None
    for pid in range(1, photos + 1):
        fmt = "jpeg" if pid % 3 == 0 else "png"
        name = f"photo_{pid:05d}.{'jpg' if fmt == 'jpeg' else 'png'}"
        if pid == 2 and first_img is not None:
            # near-duplicate of photo 1: resized and recompressed
            img = first_img.resize((first_img.width * 3 // 4, first_img.height * 3 // 4))
        else:
            img = _draw_photo(rng, (rng.choice([64, 96, 128]), rng.choice([48, 64, 96])))
        if pid == 1:
            first_img = img
        data = _encode(img, fmt)
        path = images / name
        path.write_bytes(data)
        os.utime(path, (fixed_mtime, fixed_mtime))
        uploaded = EPOCH + timedelta(hours=rng.randrange(0, 24 * days))
        rows.append(
            (
                pid,
                rng.randrange(1, users + 1),
                f"{rng.choice(WORDS)} in {rng.choice(PLACES)}",
                rng.choice(PLACES),
                _iso(uploaded),
                name,
                _iso(uploaded + timedelta(minutes=5)),
            )
        )
    # an exact copy under another name, and a truncated file
    (images / "copies").mkdir(exist_ok=True)
    copy = images / "copies" / "photo_00001_copy.png"
    copy.write_bytes((images / "photo_00001.png").read_bytes())
    broken = images / "photo_broken.jpg"
    broken.write_bytes(_encode(_draw_photo(rng, (64, 64)), "jpeg")[:200])
    for p in (copy, broken):
        os.utime(p, (fixed_mtime, fixed_mtime))

    db_path = root / "photos.db"
    if db_path.exists():
        db_path.unlink()
    con = sqlite3.connect(db_path)
    con.execute(
        "create table photos (photo_id integer primary key, user_id integer not null, title text,"
        " place text, uploaded_at text not null, image_file text not null, updated_at text not null)"
    )
    con.executemany("insert into photos values (?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()

    popularity = {pid: rng.random() ** 2 for pid in range(1, photos + 1)}
    event_no = 0
    for day in range(days):
        start = EPOCH + timedelta(days=day)
        lines = []
        for _ in range(60 + rng.randrange(40)):
            event_no += 1
            user = rng.randrange(1, users + 1)
            ts = start + timedelta(seconds=rng.randrange(86400))
            r = rng.random()
            if r < 0.15:
                ev: dict[str, Any] = {"event_type": "login", "photo_id": None}
            else:
                pid = rng.choices(list(popularity), weights=list(popularity.values()))[0]
                ev = {"event_type": "like" if r > 0.8 else "view", "photo_id": pid}
            lines.append(
                json.dumps(
                    {"event_id": f"e{event_no:07d}", "ts": _iso(ts), "user_id": user, **ev},
                    sort_keys=True,
                )
            )
        lines.sort(key=lambda line: json.loads(line)["ts"])
        if day == 0:
            lines.insert(5, '{"event_id": "broken", "ts": ')  # a malformed line
        text = "\n".join(lines) + "\n"
        name = f"events-{start:%Y-%m-%d}.jsonl"
        if day == days - 1 and days > 1:
            with gzip.GzipFile(logs / (name + ".gz"), "wb", mtime=0) as fh:
                fh.write(text.encode())
        else:
            (logs / name).write_text(text)
    return SampleSources(root=root, images=images, logs=logs, db_path=db_path)
