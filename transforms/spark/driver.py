"""Small increments of the Spark models, computed on the driver (DuckDB, Arrow) without a JVM.

A scheduled ``ingest transform`` after +1% rows spent most of its time starting Spark (the JVM,
the Python UDF workers, cold queries) to handle a few thousand rows.  An increment of at most
``Settings.spark_driver_max_rows`` new source rows runs here instead: the same algorithm as the
model's Spark increment (``_merge_new_events``, ``_merge_new_images``), on the same inputs, merged
by deltalake into the same table in one commit that records the same ``ModelInputs``.  Full
builds, full refreshes and bigger increments stay on Spark, and a test checks the increments
give the full refresh's table.

An increment runs here only where both engines read its input the same way (``driver_ready``):
typed timestamps and integer user ids for the events; anything else goes to Spark.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest.lake import Lake, TableId
from ingest.sources.seen import StoredKeys
from transforms.spark.common import Increment, ModelInputs, SparkModelResult, TargetMovedError, files_reaching

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pyarrow.dataset as pads

TS = pa.timestamp("us", tz="UTC")


# -- reading -------------------------------------------------------------------------------------
def read_files(
    lake: Lake,
    table: str,
    files: Sequence[str],
    *,
    version: int,
    columns: list[str],
    filter: pc.Expression | None = None,
) -> pa.Table:
    """``columns`` of the given data files (relative paths) of ``table`` at ``version``."""
    import pyarrow.dataset as pads

    ds = lake.delta_table(table, version=version).to_pyarrow_dataset()
    wanted = set(files)
    picked = pads.FileSystemDataset(
        [f for f in ds.get_fragments() if f.path in wanted], ds.schema, ds.format, ds.filesystem
    )
    return picked.to_table(columns=columns, filter=filter)


def read_table(
    lake: Lake, table: str, *, version: int, columns: list[str], filter: pc.Expression | None = None
) -> pa.Table:
    """``columns`` of ``table`` at ``version`` (files skipped by their statistics where ``filter`` allows)."""
    return _dataset(lake, table, version).to_table(columns=columns, filter=filter)


def _dataset(lake: Lake, table: str, version: int) -> pads.Dataset:
    return lake.dataset(table, version=version)


def new_rows(lake: Lake, increment: Increment, inputs: ModelInputs) -> int:
    """How many rows the increment's new files hold (their ``numRecords`` statistics; a file
    without one counts as too many, so the increment goes to Spark)."""
    actions = pa.table(lake.delta_table(inputs.source, version=inputs.source_version).get_add_actions(flatten=True))
    wanted = set(increment.files)
    paths = actions.column("path").to_pylist()
    counts = actions.column("num_records").to_pylist()
    total = 0
    for path, n in zip(paths, counts, strict=True):
        if path in wanted:
            if n is None:
                return 2**62
            total += int(n)
    return total


# -- writing -------------------------------------------------------------------------------------
def merge_changes(
    lake: Lake,
    target: str,
    increment: Increment,
    inputs: ModelInputs,
    changes: pa.Table,
    *,
    predicate: str | None,
    clauses: Callable[[Any], Any] | None = None,
) -> SparkModelResult:
    """Write ``changes`` into ``target`` in ONE commit that records ``inputs`` and the run id,
    like ``transforms.spark.common.merge_delta``: a MERGE on ``predicate`` with ``clauses``, or,
    with no predicate (nothing stored changes), an append (``ingest.delta.commit_change``, which
    may follow a MERGE with a swap of view-typed files that records the same).

    The changes were computed from the target at ``increment.target_version``: the transaction
    starts there, so a commit by another writer since is a conflict (``TargetMovedError``) and
    the run starts over, as on Spark.
    """
    from ingest.delta import CommitConflict, commit_change, current_version
    from transforms.spark.common import check_unmoved, commit_user_metadata, merged

    tid = TableId.parse(target)
    check_unmoved(tid, increment, head=current_version(lake, tid))
    try:
        version, written = commit_change(
            lake,
            tid,
            changes,
            read_version=increment.target_version,
            predicate=predicate,
            clauses=clauses,
            metadata={"userMetadata": commit_user_metadata(inputs.model, inputs)},
        )
    except CommitConflict as exc:
        raise TargetMovedError(str(exc)) from None
    return merged(lake, tid, increment, inputs, version=version, written=written, where=" on the driver")


# -- sessionize_events ---------------------------------------------------------------------------
SESSION_SQL = """
with ev as (
    select distinct on (event_id) event_id, ts, user_id, event_type from window_events
),
starts as (
    select *,
        case when lag(ts) over w is null then 1
             when epoch_us(ts) - epoch_us(lag(ts) over w) > $gap_us then 1
             else 0 end as _new
    from ev
    window w as (partition by user_id order by ts, event_id)
),
numbered as (
    select *, sum(_new) over (partition by user_id order by ts, event_id
                              rows between unbounded preceding and current row) as _seq
    from starts
),
sessions as (
    select user_id, min(ts) as session_start, max(ts) as session_end, count(*) as events,
        sum(case when event_type = 'view' then 1 else 0 end) as views,
        sum(case when event_type = 'like' then 1 else 0 end) as likes
    from numbered
    group by user_id, _seq
)
select user_id,
    substr(sha256(cast(user_id as varchar) || '|' || strftime(session_start, '%Y-%m-%dT%H:%M:%S.%f')), 1, 32)
        as session_id,
    session_start, session_end,
    cast(events as bigint) as events, cast(views as bigint) as views, cast(likes as bigint) as likes
from sessions
"""


def plain_source(lake: Lake, inputs: ModelInputs) -> bool:
    """Whether the source's data files hold exactly its rows (no deletion vectors...), so that
    reading them as parquet (``read_files``) reads the table."""
    from transforms.spark.common import plain_files

    return plain_files(lake.delta_table(inputs.source, version=inputs.source_version)) is not None


def sessions_ready(lake: Lake, inputs: ModelInputs) -> bool:
    """Whether both engines read the events alike: plain files, ``ts`` a timestamp, ``user_id`` an integer."""
    schema = pa.schema(lake.delta_table(inputs.source, version=inputs.source_version).schema().to_arrow())
    names = schema.names
    return (
        plain_source(lake, inputs)
        and "ts" in names
        and "user_id" in names
        and pa.types.is_timestamp(schema.field("ts").type)
        and pa.types.is_integer(schema.field("user_id").type)
    )


def sessionize_increment(
    lake: Lake, increment: Increment, inputs: ModelInputs, *, gap_minutes: float, target: str
) -> SparkModelResult:
    """``sessionize._merge_new_events`` on the driver: the users' sessions from their watermark on
    are recomputed from the events at or after it and merged by (user_id, session_id)."""
    import duckdb

    gap_us = round(float(gap_minutes) * 60_000_000)
    columns = ["event_id", "ts", "user_id", "event_type"]
    usable = (pc.field("user_id").is_valid()) & (pc.field("ts").is_valid())
    new = _naive(
        read_files(lake, inputs.source, increment.files, version=inputs.source_version, columns=columns, filter=usable)
    )
    session_columns = ["user_id", "session_id", "session_start", "session_end", "events", "views", "likes"]
    if new.num_rows == 0:  # nothing usable: a commit that records the new input
        empty = pa.schema(lake.delta_table(target, version=increment.target_version).schema().to_arrow()).empty_table()
        return merge_changes(lake, target, increment, inputs, empty, predicate=None)
    con = duckdb.connect()
    con.register("new_events", new)
    first_new = con.sql(
        "select cast(user_id as bigint) as user_id, min(ts) as first_new from new_events group by 1"
    ).to_arrow_table()
    users = first_new.column("user_id")
    stored = _naive(
        read_table(
            lake,
            target,
            version=increment.target_version,
            columns=session_columns,
            filter=pc.field("user_id").isin(users),
        )
    )
    con.register("stored", stored)
    con.register("first_new", first_new)
    # per user: the watermark the sessions the new events can change start at
    marks = con.sql(
        f"""
        select f.user_id, least(f.first_new, coalesce(min(s.session_start), f.first_new)) as watermark
        from first_new f left join stored s
          on s.user_id = f.user_id and epoch_us(s.session_end) >= epoch_us(f.first_new) - {gap_us}
        group by f.user_id, f.first_new
        """
    ).to_arrow_table()
    low = pc.min(marks.column("watermark")).as_py()
    low_micros = int(pc.min(pc.cast(pc.cast(marks.column("watermark"), pa.timestamp("us")), pa.int64())).as_py())
    files = files_reaching(lake, inputs.source, version=inputs.source_version, column="ts", low_micros=low_micros)
    if files is None:  # sessions_ready checked the files are plain parquet
        raise ValueError(f"{inputs.source} files are not plain parquet: run this increment on Spark")
    events = _naive(
        read_files(
            lake,
            inputs.source,
            files,
            version=inputs.source_version,
            columns=columns,
            filter=usable & (pc.field("ts") >= pa.scalar(low, TS)) & pc.field("user_id").isin(users),
        )
    )
    con.register("events", events)
    con.register("marks", marks)
    con.execute(
        """create temp view window_events as
           select e.event_id, e.ts, cast(e.user_id as bigint) as user_id, e.event_type
           from events e join marks m on cast(e.user_id as bigint) = m.user_id where e.ts >= m.watermark"""
    )
    fresh = con.execute(SESSION_SQL, {"gap_us": gap_us}).to_arrow_table()
    con.register("fresh", fresh)
    gone = con.sql(
        """select s.* from stored s join marks m on s.user_id = m.user_id
           where s.session_start >= m.watermark
             and not exists (select 1 from fresh f where f.user_id = s.user_id and f.session_id = s.session_id)"""
    ).to_arrow_table()
    changes = pa.concat_tables(
        [
            _aware(fresh.select(session_columns)).append_column("_gone", pa.repeat(pa.scalar(False), fresh.num_rows)),
            _aware(gone.select(session_columns).cast(fresh.select(session_columns).schema)).append_column(
                "_gone", pa.repeat(pa.scalar(True), gone.num_rows)
            ),
        ]
    )
    values = {c: f"s.{c}" for c in session_columns}
    return merge_changes(
        lake,
        target,
        increment,
        inputs,
        changes,
        predicate="t.user_id = s.user_id AND t.session_id = s.session_id",
        clauses=lambda m: (
            m.when_matched_delete(predicate="s._gone")
            .when_matched_update(updates=values, predicate="NOT s._gone")
            .when_not_matched_insert(updates=values, predicate="NOT s._gone")
        ),
    )


def _naive(table: pa.Table) -> pa.Table:
    """Timestamps as naive UTC (DuckDB formats and compares them without a time-zone extension)."""
    fields = [pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _aware(table: pa.Table) -> pa.Table:
    fields = [pa.field(f.name, TS) if pa.types.is_timestamp(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


# -- dedup_images --------------------------------------------------------------------------------
def hex_hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """16-digit hex hashes (no nulls), as the table stores ``phash``, to their 64 bits (uint64),
    in a few vectorized steps: 5M of them in Python ints took seconds."""
    import numpy as np

    arr = pc.utf8_lower(values)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    arr = arr.cast(pa.string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.null_count or pc.min(pc.binary_length(arr)).as_py() != 16 or pc.max(pc.binary_length(arr)).as_py() != 16:
        raise ValueError("phash values must be 16 hex digits")
    start = int(np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset])
    digits = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[start : start + 16 * n].reshape(n, 16)
    lut = np.full(256, 255, dtype=np.uint8)
    lut[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
    nibbles = lut[digits]
    if (nibbles == 255).any():
        raise ValueError("phash values must be 16 hex digits")
    out = np.zeros(n, dtype=np.uint64)
    for i in range(16):
        out = (out << np.uint64(4)) | nibbles[:, i].astype(np.uint64)
    return out


def near_pair_indices(a: np.ndarray, b: np.ndarray, *, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i into a, j into b) of uint64 hashes at most ``threshold`` bits apart.

    Exact, like the Spark model's banded join, but more selective: of threshold+2 blocks, two
    pairs within the threshold agree on at least two, so each pair of blocks is a key (16 bits
    at the default threshold, against 9 for one band): a 50k x 5M search checks ~100M candidates
    rather than ~3G, and the stored side is only gathered against a count per key.
    """
    import itertools

    import numpy as np

    from transforms.spark.dedup_images import bands

    empty = np.zeros(0, dtype=np.int64)
    if len(a) == 0 or len(b) == 0:
        return empty, empty
    codes = []
    if threshold + 2 > 32:  # blocks of 1-2 bits select nothing: compare every pair, in chunks
        step = max(1, (1 << 22) // len(a))
        for lo in range(0, len(b), step):
            ai, bj = np.nonzero(np.bitwise_count(a[:, None] ^ b[None, lo : lo + step]) <= threshold)
            codes.append(ai.astype(np.int64) * len(b) + bj + lo)
    else:
        spec = bands(threshold + 1)
        blocks_a, blocks_b = _blocks(a, spec), _blocks(b, spec)  # once, not once per pair
        for (i, (_, w1)), (j, (_, w2)) in itertools.combinations(enumerate(spec), 2):
            ka = (blocks_a[i] << np.uint64(w2)) | blocks_a[j]
            kb = (blocks_b[i] << np.uint64(w2)) | blocks_b[j]
            ai, bj = _equal_keys(ka, kb, bits=w1 + w2)
            close = np.bitwise_count(a[ai] ^ b[bj]) <= threshold
            codes.append(ai[close].astype(np.int64) * len(b) + bj[close])
    code = np.unique(np.concatenate(codes)) if codes else empty
    return code // len(b), code % len(b)


def _blocks(h: np.ndarray, spec: list[tuple[int, int]]) -> list[np.ndarray]:
    """Each (shift, width) block of the hashes, as uint64 (a key shifts one past the other)."""
    import numpy as np

    return [(h >> np.uint64(shift)) & np.uint64((1 << width) - 1) for shift, width in spec]


def _equal_keys(ka: np.ndarray, kb: np.ndarray, *, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with ka[i] == kb[j]; ka is the small side."""
    import numpy as np

    order = np.argsort(ka, kind="stable")
    if bits <= 22:  # a count per key: the big side is one gather, no search
        per_key = np.bincount(ka.astype(np.int64), minlength=1 << bits)
        first = np.cumsum(per_key) - per_key
        kbi = kb.astype(np.int64)
        count, lo = per_key[kbi], first[kbi]
    else:
        sorted_a = ka[order]
        lo = np.searchsorted(sorted_a, kb, side="left")
        count = np.searchsorted(sorted_a, kb, side="right") - lo
    hit = np.nonzero(count)[0]
    n = count[hit]
    bj = np.repeat(hit, n)
    offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    ai = order[np.repeat(lo[hit], n) + offset]
    return ai, bj


def dedup_increment(
    lake: Lake, increment: Increment, inputs: ModelInputs, *, threshold: int, target: str
) -> SparkModelResult:
    """``dedup_images._merge_new_images`` on the driver: new contents are hashed, paired with each
    other and with the stored index, and only the groups they join are recomputed."""
    import duckdb
    import numpy as np

    from transforms.spark.dedup_images import _check_threshold, dhash, group_pairs

    _check_threshold(threshold)
    raw = read_files(
        lake,
        inputs.source,
        increment.files,
        version=inputs.source_version,
        columns=["sha256", "content", "width", "height", "format", "size_bytes"],
    )
    con = duckdb.connect()
    con.register("raw", raw)
    new = con.sql(
        """select sha256, first(content) filter (where content is not null) as content,
                  max(width) as width, max(height) as height,
                  first(format) filter (where format is not null) as format,
                  max(size_bytes) as size_bytes, count(*) as exact_copies
           from raw group by sha256"""
    ).to_arrow_table()
    # stored rows are found through the target's saved key index (``StoredKeys``), kept current
    # after each run: only files that may hold a key are searched, not 5M stored hashes
    snapshot = lake.delta_table(target, version=increment.target_version)
    by_sha = StoredKeys(lake, target, "sha256", app_id="")
    known_rows = by_sha.rows(
        new.column("sha256").to_pylist(), columns=["sha256", "canonical_sha256"], snapshot=snapshot
    )
    by_sha.save()  # what had to be read from data files (no saved index yet) is not read again
    known = dict(
        zip(known_rows.column("sha256").to_pylist(), known_rows.column("canonical_sha256").to_pylist(), strict=True)
    )
    new_rows_ = new.drop_columns(["content"]).to_pylist()
    contents = new.column("content").to_pylist()
    seen = [row for row in new_rows_ if row["sha256"] in known]
    unseen = [row for row in new_rows_ if row["sha256"] not in known]
    todo = [content for row, content in zip(new_rows_, contents, strict=True) if row["sha256"] not in known]

    # Pillow decodes without the GIL: one thread per core, as Spark's UDF runs one worker per
    # core, each given runs of 256 images (a future per image cost more than a small image's hash)
    def hash_run(contents: list[bytes | None]) -> list[int | None]:
        return [dhash(c) for c in contents]

    runs = [todo[i : i + 256] for i in range(0, len(todo), 256)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        hashes = [h for run in pool.map(hash_run, runs) for h in run]
    for row, phash in zip(unseen, hashes, strict=True):
        row["phash_l"] = phash
    hashed = [r for r in unseen if r["phash_l"] is not None]
    keys = [r["sha256"] for r in hashed]
    new_hash = np.array([r["phash_l"] for r in hashed], dtype=np.int64).view(np.uint64)
    xi, yi = near_pair_indices(new_hash, new_hash, threshold=threshold)
    edges = [(keys[x], keys[y]) for x, y in zip(xi.tolist(), yi.tolist(), strict=True) if keys[x] < keys[y]]
    joins: list[tuple[str, str]] = []
    if hashed:
        index = _dataset(lake, target, increment.target_version)
        phash = index.to_table(columns=["phash"]).column("phash")
        present = pc.indices_nonzero(pc.is_valid(phash))
        ni, si = near_pair_indices(new_hash, hex_hashes(pc.take(phash, present)), threshold=threshold)
        if len(si):
            rows = index.take(pc.take(present, pa.array(si)), columns=["canonical_sha256"])
            joins = list(zip([keys[i] for i in ni.tolist()], rows.column("canonical_sha256").to_pylist(), strict=True))
    groups = group_pairs(edges + joins)
    touched = {c for _, c in joins} | {known[r["sha256"]] for r in seen}
    group_of = {k: groups.get(k, k) for k in touched | set(groups)}
    copies = {r["sha256"]: r for r in seen}
    members: list[dict[str, Any]] = []
    if touched:
        by_group = StoredKeys(lake, target, "canonical_sha256", app_id="")
        stored = by_group.rows(
            sorted(touched),
            columns=["sha256", "canonical_sha256", "phash", "width", "height", "format", "size_bytes", "exact_copies"],
            snapshot=snapshot,
        )
        by_group.save()
        for row in stored.to_pylist():
            new_copy = copies.get(row["sha256"], {})
            members.append(
                {
                    "sha256": row["sha256"],
                    "group_id": group_of[row["canonical_sha256"]],
                    "phash_l": None if row["phash"] is None else _signed(int(row["phash"], 16)),
                    "width": _greatest(row["width"], new_copy.get("width")),
                    "height": _greatest(row["height"], new_copy.get("height")),
                    "format": row["format"] if row["format"] is not None else new_copy.get("format"),
                    "size_bytes": _greatest(row["size_bytes"], new_copy.get("size_bytes")),
                    "exact_copies": row["exact_copies"] + (new_copy.get("exact_copies") or 0),
                }
            )
    fresh = [{**r, "group_id": group_of.get(r["sha256"], r["sha256"])} for r in unseen]
    changes = _grouped(members + fresh)
    schema = pa.schema(snapshot.schema().to_arrow())
    table = pa.Table.from_pylist(changes, schema=schema) if changes else schema.empty_table()
    if not touched:  # only new contents: nothing stored changes
        return merge_changes(lake, target, increment, inputs, table, predicate=None)
    values = {c: f"s.{c}" for c in schema.names}
    listed = ", ".join("'" + c.replace("'", "''") + "'" for c in sorted(touched))
    return merge_changes(
        lake,
        target,
        increment,
        inputs,
        table,
        predicate=f"t.sha256 = s.sha256 AND t.canonical_sha256 IN ({listed})",
        clauses=lambda m: m.when_matched_update(updates=values).when_not_matched_insert(updates=values),
    )


def _signed(value: int) -> int:
    """The 64 bits as a signed int64, as the models hold them."""
    return value - (1 << 64) if value >= (1 << 63) else value


def _greatest(a: Any, b: Any) -> Any:
    """Spark's ``greatest``: the larger, nulls skipped."""
    return b if a is None else a if b is None else max(a, b)


def _grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``dedup_images.grouped_frame`` on rows: the canonical of each group and every member's distance."""
    from transforms.spark.dedup_images import hamming, phash_hex

    def rank(r: dict[str, Any]) -> tuple[Any, ...]:
        size = r["size_bytes"]
        return (
            -((r["width"] or 0) * (r["height"] or 0)),
            0 if r["format"] == "png" else 1,
            (0, -size) if size is not None else (1, 0),
            r["sha256"],
        )

    by_group: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_group.setdefault(r["group_id"], []).append(r)
    out = []
    for members in by_group.values():
        canon = min(members, key=rank)
        for r in members:
            is_canon = r["sha256"] == canon["sha256"]
            if is_canon:
                distance = 0
            elif r["phash_l"] is None or canon["phash_l"] is None:
                distance = None
            else:
                distance = hamming(r["phash_l"], canon["phash_l"])
            out.append(
                {
                    "sha256": r["sha256"],
                    "canonical_sha256": canon["sha256"],
                    "phash": phash_hex(r["phash_l"]),
                    "distance": distance,
                    "is_canonical": is_canon,
                    "exact_copies": r["exact_copies"],
                    "width": r["width"],
                    "height": r["height"],
                    "format": r["format"],
                    "size_bytes": r["size_bytes"],
                }
            )
    return out


@dataclass(frozen=True)
class DriverIncrement:
    """How one model runs an increment on the driver: whether its input allows it, and the run."""

    ready: Callable[[Lake, ModelInputs], bool]
    run: Callable[..., SparkModelResult]
    # columns of the target its increments look rows up by (``StoredKeys``): their saved key
    # index is brought up to date after every run of the model, Spark's full builds included
    key_columns: tuple[str, ...] = ()


DRIVER_INCREMENTS: dict[str, DriverIncrement] = {
    "dedup_images": DriverIncrement(
        ready=plain_source, run=dedup_increment, key_columns=("sha256", "canonical_sha256")
    ),
    "sessionize_events": DriverIncrement(ready=sessions_ready, run=sessionize_increment),
}


__all__ = [
    "DRIVER_INCREMENTS",
    "dedup_increment",
    "merge_changes",
    "near_pair_indices",
    "hex_hashes",
    "new_rows",
    "sessionize_increment",
    "sessions_ready",
]
