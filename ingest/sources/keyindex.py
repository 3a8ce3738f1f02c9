"""A run's index of the content hashes a table holds, so a batch's lookup does not read them again.

A batch of random sha256 keys falls into every data file that is not ordered by hash, so
searching the files reads every stored hash once per batch.  ``PrefixIndex`` keeps the first 64
bits of each stored hash (and the file that holds it) in sorted arrays, 12 bytes a row, read
once per run: a lookup is a binary search per key, and only a key whose prefix is there (a
duplicate, or a 1-in-2^64 collision) sends its file to the exact search.  The index proposes
candidates; the exact ``column IN (keys)`` search decides, so a collision costs a read, never a row.

``SavedPrefixes`` keeps those prefixes beside the table between runs (``_ingest_keyindex/`` in the
table's directory), so a run reads a few compact files instead of every data file's hash column:
at 1,000,000 stored images, ~12 MB in one read instead of 64 MB of hex strings out of ~2,000
Parquet files.  A data file never changes once written, so what is saved for its path stays
true; saved entries of files the table no longer holds are ignored.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import numpy as np

HEX_DIGITS = 64  # a sha256 hexdigest
_PREFIX_DIGITS = 16  # 64 bits
_MERGE_PARTS = 16  # sorted runs kept apart before they are merged into one (more than saved files)
_HEX_KEY = re.compile(f"[0-9a-fA-F]{{{HEX_DIGITS}}}")


def _hex_table() -> np.ndarray:
    import numpy as np

    table = np.full(256, 255, np.uint8)
    for i, c in enumerate(b"0123456789abcdef"):
        table[c] = i
    for i, c in enumerate(b"ABCDEF"):
        table[c] = 10 + i
    return table


def key_prefix(key: str) -> int | None:
    """The first 64 bits of a hex digest key; None for any other key."""
    if not _HEX_KEY.fullmatch(key):  # (int(key, 16) takes signs, spaces and underscores too)
        return None
    return int(key[:_PREFIX_DIGITS], 16)


def digest_prefixes(values: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """The first 64 bits of every value as uint64 (no Python object per row); None when a value
    is null, not 64 characters long or does not start with 16 hex digits.  (Only the prefix is
    read: a lookup key is a whole digest, and equal strings have equal prefixes.)"""
    import numpy as np

    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.large_string())
    if len(arr) == 0:
        return np.empty(0, np.uint64)
    lengths = pc.min_max(pc.binary_length(arr)).as_py()
    if arr.null_count or lengths != {"min": HEX_DIGITS, "max": HEX_DIGITS}:
        return None
    offsets = np.frombuffer(arr.buffers()[1], np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    nibbles = _hex_table()[data.reshape(-1, HEX_DIGITS)[:, :_PREFIX_DIGITS]]  # 16 bytes a row
    if (nibbles == 255).any():
        return None
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]  # the prefix's 8 bytes, big-endian
    out: np.ndarray = np.ascontiguousarray(packed).view(">u8").ravel().astype(np.uint64)
    return out


class PrefixIndex:
    """Sorted 64-bit key prefixes of the files added so far, with the file of each."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._parts: list[tuple[Any, Any]] = []  # (sorted prefixes, file number of each)
        self._pending: list[tuple[Any, Any]] = []

    def add(self, path: str, prefixes: np.ndarray) -> None:
        import numpy as np

        self._pending.append((prefixes, np.full(len(prefixes), len(self.paths), np.uint32)))
        self.paths.append(path)

    def add_sorted(self, paths: list[str], prefixes: np.ndarray, files: np.ndarray) -> None:
        """Add several files as one run already sorted by prefix: ``files[i]`` is the position
        in ``paths`` of the file holding ``prefixes[i]`` (no sort: a saved index is stored so)."""
        import numpy as np

        self._parts.append((prefixes, files.astype(np.uint32) + np.uint32(len(self.paths))))
        self.paths.extend(paths)

    def files_holding(self, prefixes: list[int]) -> dict[str, set[int]]:
        """For each file that holds one of ``prefixes``: which of them (by position)."""
        import numpy as np

        self._settle()
        wanted = np.array(prefixes, np.uint64)
        out: dict[str, set[int]] = {}
        for keys, files in self._parts:
            lo, hi = np.searchsorted(keys, wanted, "left"), np.searchsorted(keys, wanted, "right")
            # the files of each run of equal prefixes are found once: keys that are no random
            # digests (zero-padded numbers) share one prefix, and a pass over the run per key
            # made a lookup quadratic
            runs: dict[tuple[int, int], list[str]] = {}
            for i in np.nonzero(hi > lo)[0].tolist():
                run = (int(lo[i]), int(hi[i]))
                if run not in runs:
                    runs[run] = [self.paths[f] for f in np.unique(files[run[0] : run[1]]).tolist()]
                for path in runs[run]:
                    out.setdefault(path, set()).add(i)
        return out

    def _settle(self) -> None:
        import numpy as np

        if self._pending:
            self._parts.append(
                _sorted_run(
                    np.concatenate([k for k, _ in self._pending]), np.concatenate([f for _, f in self._pending])
                )
            )
            self._pending = []
        if len(self._parts) > _MERGE_PARTS:
            self._parts = [
                _sorted_run(np.concatenate([k for k, _ in self._parts]), np.concatenate([f for _, f in self._parts]))
            ]


def _sorted_run(keys: np.ndarray, files: np.ndarray) -> tuple[Any, Any]:
    order = keys.argsort(kind="stable")
    return keys[order], files[order]


INDEX_DIR = "_ingest_keyindex"  # Delta's vacuum leaves names that start with "_" alone
_FORMAT = "v1"  # 64-bit prefixes of hex digests; another layout gets another folder
_MAX_SEGMENTS = 8  # saved files kept apart before a save merges them into one


class SavedPrefixes:
    """Key prefixes of a table's data files, saved beside the table (``<table>/_ingest_keyindex``).

    Each save adds one small Parquet file (``file``: the data file's path as the Delta log names
    it, ``prefix``: uint64); past ``_MAX_SEGMENTS`` of them a save merges the live entries into
    one and deletes the rest.  A save goes to a temporary name first, so a reader never sees half
    of one; an unreadable or vanished file (a concurrent merge) is skipped, and its data files'
    keys are read from the data files again.  Nothing here can hide a stored key: the entries
    are the files' own prefixes, and the exact search still decides.
    """

    def __init__(self, fs: Any, table_root: str, column: str) -> None:
        self.fs = fs
        self.dir = f"{table_root.rstrip('/')}/{INDEX_DIR}/{_FORMAT}/{column}"

    @staticmethod
    def columns(fs: Any, table_root: str) -> list[str]:
        """The columns a saved index exists for in the table at ``table_root``."""
        import pyarrow.fs as pafs

        base = f"{table_root.rstrip('/')}/{INDEX_DIR}/{_FORMAT}"
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except OSError:
            return []
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def _listing(self) -> list[Any]:
        """The saved index folder's entries (none when it cannot be listed)."""
        import pyarrow.fs as pafs

        try:
            return list(self.fs.get_file_info(pafs.FileSelector(self.dir, allow_not_found=True)))
        except OSError:
            return []

    def _segments(self, listing: list[Any] | None = None) -> list[str]:
        import pyarrow.fs as pafs

        infos = self._listing() if listing is None else listing
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))

    def _read(self, segments: list[str], live: set[str]) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
        """Per saved file that could be read: (live data files, their prefixes sorted, the
        position of each prefix's data file in that list)."""
        import numpy as np
        import pyarrow.parquet as pq

        out = []
        for seg in segments:
            try:
                table = pq.read_table(seg, filesystem=self.fs)
            except (OSError, pa.ArrowInvalid):  # merged away meanwhile, or damaged: read the data instead
                continue
            prefixes = table.column("prefix").to_numpy()
            if len(prefixes) > 1 and not (prefixes[1:] >= prefixes[:-1]).all():
                continue  # not sorted: a binary search could miss a key, so it is not used
            files = table.column("file").combine_chunks()
            names = files.dictionary.to_pylist()
            keep = np.array([n in live for n in names], bool)
            codes = files.indices.to_numpy(zero_copy_only=False)
            if keep.all():  # the usual case: no copies (1M rows: 12 MB, not ~40 MB at once)
                out.append((names, prefixes, codes))
                continue
            renumber = np.cumsum(keep, dtype=np.int64) - 1  # old position -> position among the live
            rows = keep[codes]
            out.append(
                (
                    [n for n, k in zip(names, keep, strict=True) if k],
                    prefixes[rows],
                    renumber[codes[rows]],
                )
            )
        return out

    def load(self, live: set[str]) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
        """The saved prefixes of the data files in ``live`` (Delta log paths), per saved file:
        (paths, prefixes sorted, position in paths of each prefix's file).  A data file saved
        twice (by concurrent runs) is in more than one: harmless, the index names it once more."""
        return self._read(self._segments(), live)

    def save(self, entries: dict[str, np.ndarray], *, live: set[str], merge: bool = False) -> None:
        """Save ``entries`` (data file path -> its prefixes), sorted by prefix; past the limit
        (or with ``merge``), merge the saved files into one, keeping only the entries of files
        in ``live``."""

        import numpy as np

        if not entries and not merge:
            return
        listing = self._listing()
        segments = self._segments(listing)
        names = list(entries)
        prefixes = [entries[n] for n in names]
        codes = [np.repeat(np.arange(len(names), dtype=np.int32), [len(x) for x in prefixes])]
        merged = merge or len(segments) + 1 > _MAX_SEGMENTS
        if merged:
            taken = set(names)
            for paths, keys, files in self._read(segments, live):
                fresh = np.array([p not in taken for p in paths], bool)  # one copy of each data file
                taken.update(paths)
                renumber = np.cumsum(fresh, dtype=np.int64) - 1 + len(names)
                rows = fresh[files]
                codes.append(renumber[files[rows]].astype(np.int32))
                prefixes.append(keys[rows])
                names.extend(p for p, f in zip(paths, fresh, strict=True) if f)
        if names:
            self._write(np.concatenate(prefixes), np.concatenate(codes), names)
        if merged:
            for seg in segments + self._abandoned(listing):
                with contextlib.suppress(OSError):
                    self.fs.delete_file(seg)

    def _abandoned(self, listing: list[Any]) -> list[str]:
        """Temporary files of saves killed before their rename, over an hour old."""
        import datetime as dt

        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        return [
            i.path
            for i in listing
            if i.base_name.endswith(".tmp") and i.mtime is not None and i.mtime.astimezone(dt.UTC) < cutoff
        ]

    def _write(self, keys: np.ndarray, files: np.ndarray, names: list[str]) -> None:
        """One saved file, sorted by prefix, under a temporary name until it is whole."""
        import uuid

        import pyarrow.parquet as pq

        order = keys.argsort(kind="stable")
        table = pa.table(
            {
                "file": pa.DictionaryArray.from_arrays(pa.array(files[order]), pa.array(names, pa.string())),
                "prefix": pa.array(keys[order], pa.uint64()),
            }
        )
        self.fs.create_dir(self.dir, recursive=True)
        name = f"{self.dir}/{uuid.uuid4().hex}.parquet"
        tmp = f"{self.dir}/.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        self.fs.move(tmp, name)
