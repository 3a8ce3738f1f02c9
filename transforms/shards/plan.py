"""Which sample goes to which split, in which order, in which shard — the same on every engine.

Split membership hashes only the key (never the seed or the row count), so adding rows never
moves an existing sample between train and val.  The seed only salts the order inside a split.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def parse_size(size: str | int) -> int:
    """``256MB`` -> bytes (binary units, as shard tools use: 256MB = 256 * 2**20)."""
    if isinstance(size, int):
        value = size
    else:
        m = _SIZE_RE.match(str(size))
        if not m:
            raise ValueError(f"bad shard size {size!r}: write a number with an optional unit, e.g. 256MB or 1GB")
        unit = (m.group(2) or "").upper().replace("I", "").rstrip("B") or ""
        value = int(float(m.group(1)) * _UNITS[unit])
    if value < 1024:
        raise ValueError(f"shard size {size!r} is below 1KB: use e.g. 64MB")
    return value


def validate_split(split: dict[str, float]) -> list[tuple[str, float]]:
    """Split names and fractions, in the given order; fractions must be positive and sum to 1."""
    if not split:
        raise ValueError("split is empty: use e.g. train=0.9,val=0.1")
    out = []
    for name, frac in split.items():
        if not _SPLIT_NAME.match(name):
            raise ValueError(f"bad split name {name!r}: use letters, digits, '_' or '-' (e.g. train)")
        if not (isinstance(frac, (int, float)) and frac > 0):
            raise ValueError(f"split {name!r} has fraction {frac!r}: fractions must be > 0")
        out.append((name, float(frac)))
    total = sum(f for _, f in out)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions sum to {total:g}, not 1: e.g. train=0.9,val=0.1")
    return out


def key_text(value: Any) -> str:
    """The canonical text of a key value (the same for Arrow values from any engine)."""
    if value is None:
        raise ValueError("a sample key is null: choose a --key column without nulls")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _unit(text: str) -> float:
    h = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_of(key: str, splits: Sequence[tuple[str, float]]) -> str:
    """The split a key belongs to: a stable hash of the key alone."""
    u = _unit("split\x00" + key)
    acc = 0.0
    for name, frac in splits:
        acc += frac
        if u < acc:
            return name
    return splits[-1][0]


def order_of(key: str, seed: int) -> bytes:
    """Sort key inside a split: a seeded hash (a fixed shuffle), then the key itself."""
    return hashlib.sha256(f"order\x00{seed}\x00{key}".encode()).digest()[:12] + key.encode("utf-8")


@dataclass(frozen=True)
class SampleInfo:
    key: str
    split: str
    order: bytes
    size: int  # exact encoded bytes in the shard (estimate for parquet)


@dataclass
class ShardPlan:
    split: str
    index: int  # within the split
    keys: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def samples(self) -> int:
        return len(self.keys)


def plan_shards(
    samples: Iterable[SampleInfo],
    *,
    splits: Sequence[tuple[str, float]],
    target: int,
    overhead: int,
) -> list[ShardPlan]:
    """Cut each split's ordered samples into shards of at most ``target`` bytes.

    A sample bigger than the target gets a shard of its own instead of failing.
    """
    by_split: dict[str, list[SampleInfo]] = {name: [] for name, _ in splits}
    seen: set[str] = set()
    for s in samples:
        if s.key in seen:
            raise ValueError(f"duplicate sample key {s.key!r}: the --key column must be unique")
        seen.add(s.key)
        by_split[s.split].append(s)
    plans: list[ShardPlan] = []
    for name, _ in splits:
        current: ShardPlan | None = None
        for s in sorted(by_split[name], key=lambda x: x.order):
            if current is None or (current.keys and current.size + s.size > target):
                current = ShardPlan(split=name, index=sum(p.split == name for p in plans), size=overhead)
                plans.append(current)
            current.keys.append(s.key)
            current.size += s.size
    return plans
