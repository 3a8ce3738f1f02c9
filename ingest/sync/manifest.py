"""``manifest.json`` at a shard-set root: the one schema ``ingest shards`` writes and ``ingest sync`` reads.

Standard library only (dataclasses, not pydantic): ``ingest sync`` starts on every training job,
and a re-sync of a complete DEST must return faster than importing pydantic takes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import IngestError

__all__ = ["MANIFEST_NAME", "SUMS_NAME", "ShardEntry", "ShardManifest", "SyncError"]

MANIFEST_NAME = "manifest.json"  # written last: its presence means the set is complete
SUMS_NAME = "SHA256SUMS"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class SyncError(IngestError):
    """A shard could not be staged (checksum mismatch after retries, missing object, no space)."""

    exit_code = 4


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class ShardEntry:
    """One file of a shard set: a shard (with ``split`` and ``samples``) or a reader's file (MDS index.json).

    Raises:
        ValueError: a field has the wrong type, or ``sha256`` is not 64 hex digits.
    """

    path: str
    bytes: int
    sha256: str
    split: str | None = None
    samples: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise ValueError(f"path must be a string, got {self.path!r}")
        if not _is_int(self.bytes) or self.bytes < 0:
            raise ValueError(f"bytes must be an integer >= 0, got {self.bytes!r}")
        sha = self.sha256.strip().lower() if isinstance(self.sha256, str) else ""
        if not _SHA_RE.match(sha):
            raise ValueError(f"sha256 {str(self.sha256)[:80]!r} is not 64 hex digits")
        self.sha256 = sha
        if self.split is not None and not isinstance(self.split, str):
            raise ValueError(f"split must be a string, got {self.split!r}")
        if self.samples is not None and (not _is_int(self.samples) or self.samples < 0):
            raise ValueError(f"samples must be an integer >= 0, got {self.samples!r}")

    @classmethod
    def from_dict(cls, data: Any) -> ShardEntry:
        """An entry from its JSON object; keys this schema does not know are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"must be an object with path, bytes and sha256, got {type(data).__name__}")
        missing = [k for k in ("path", "bytes", "sha256") if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(**{k: data[k] for k in _ENTRY_FIELDS if k in data})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: ``split`` and ``samples`` only when set."""
        out: dict[str, Any] = {"path": self.path}
        if self.split is not None:
            out["split"] = self.split
        if self.samples is not None:
            out["samples"] = self.samples
        out["bytes"] = self.bytes
        out["sha256"] = self.sha256
        return out


_ENTRY_FIELDS = ("path", "bytes", "sha256", "split", "samples")


@dataclass
class ShardManifest:
    """A complete shard set: its shards, the files readers need besides them, and its provenance.

    Raises:
        ValueError: from ``from_dict`` when the JSON does not follow this schema.
    """

    shards: list[ShardEntry]
    # other files every reader of a split needs (the MDS index.json per split)
    files: list[ShardEntry] = field(default_factory=list)
    dataset: str | None = None
    snapshot: str | None = None
    format: str | None = None
    created_at: str | None = None  # ISO 8601, UTC
    tables: dict[str, int] | None = None  # table -> Delta version the set was cut from
    source_runs: list[dict[str, Any]] | None = None  # the runs that wrote those versions
    code_version: str | None = None
    key: str | None = None  # the sample-key column
    options: dict[str, Any] | None = None  # split, shard_size, seed: what `--reuse` compares

    @classmethod
    def from_dict(cls, data: Any) -> ShardManifest:
        if not isinstance(data, dict):
            raise ValueError(f"the top level must be an object, got {type(data).__name__}")
        if not isinstance(data.get("shards"), list):
            raise ValueError("shards: a list of {path, bytes, sha256} is required")
        lists: dict[str, list[ShardEntry]] = {}
        for key in ("shards", "files"):
            entries = []
            for i, raw in enumerate(data.get(key) or []):
                try:
                    entries.append(ShardEntry.from_dict(raw))
                except ValueError as exc:
                    raise ValueError(f"{key}[{i}]: {exc}") from None
            lists[key] = entries
        for key in ("dataset", "snapshot", "format", "created_at", "code_version", "key"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{key} must be a string, got {data[key]!r}")
        for key in ("tables", "options"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise ValueError(f"{key} must be an object, got {data[key]!r}")
        meta: dict[str, Any] = {k: data.get(k) for k in _META}
        return cls(shards=lists["shards"], files=lists["files"], **meta)

    @classmethod
    def parse_bytes(cls, raw: bytes, where: str) -> ShardManifest:
        """The manifest in ``raw`` (read from ``where``).

        Raises:
            SyncError: not JSON, or not this schema; the message names ``where``.
        """
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise SyncError(f"{where} is not valid JSON ({exc}): rebuild the shard set with `ingest shards`") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise SyncError(f"{where} is not a shard manifest ({exc}): rebuild it with `ingest shards`") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, provenance first, then ``shards`` and ``files``."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _META}
        out["shards"] = [s.to_dict() for s in self.shards]
        out["files"] = [f.to_dict() for f in self.files]
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False).encode("utf-8")


_META = ("dataset", "snapshot", "format", "created_at", "tables", "source_runs", "code_version", "key", "options")
