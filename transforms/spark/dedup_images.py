"""``bronze.images`` -> ``silver.image_duplicates``: exact and near-duplicate images, one canonical each.

* exact duplicates share a sha256 (bronze keeps one row per content, but re-ingestion under other
  run ids can repeat it; they collapse here);
* near duplicates (resized, recompressed, re-encoded) have 64-bit dHashes within ``threshold``
  bits.  Candidate pairs come from a banded self-join (pigeonhole: two hashes within t bits agree
  exactly on at least one of t+1 bands), so the table is never compared all-against-all.  Pairs
  are joined into groups transitively (union-find on the driver: it only sees near-duplicate
  pairs, not images).

The canonical image of a group is the largest (pixels), then lossless PNG over JPEG, then the
biggest file, then the smallest sha256 - deterministic, whatever order rows arrive in.  The table
keeps what that choice is made from (width, height, format, size_bytes).

Incremental run (the source only appended images since the table was built): only new contents
are decoded and compared, against each other and against the stored index (the table's phash
column, by the same banded join); the groups they join are merged, and only those groups'
rows are recomputed and merged in by sha256.  Stored images never pair anew among themselves,
so the groups are the same as a full rebuild's.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd  # at runtime: pandas_udf resolves the type hints of _dhash_series

from ingest.lake import Lake
from transforms.spark.common import (
    Increment,
    ModelInputs,
    SparkModelResult,
    merge_delta,
    overwrite_delta,
    read_appended,
    read_delta,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession

SOURCE = "bronze.images"
TARGET = "silver.image_duplicates"
DEFAULT_THRESHOLD = 6  # bits of 64; resize/recompress/watermark copies land at 0-4
HASH_BITS = 64


def dhash(data: bytes | None) -> int | None:
    """64-bit difference hash of an image (None if it cannot be decoded).

    Grayscale 9x8 thumbnail; bit i is set when a pixel is brighter than its right neighbour.
    Robust to resizing and recompression, unlike a byte hash.  Returned as a signed int64 so
    it fits a Spark ``bigint``.
    """
    if not data:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("L", (64, 64))  # JPEG: decode at reduced size, much faster
            small = im.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    px = small.tobytes()
    value = 0
    for row in range(8):
        base = row * 9
        for col in range(8):
            value = (value << 1) | (1 if px[base + col] > px[base + col + 1] else 0)
    return value - (1 << 64) if value >= (1 << 63) else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


def phash_hex(value: int | None) -> str | None:
    return None if value is None else f"{value & ((1 << 64) - 1):016x}"


def bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of threshold+1 contiguous bit bands covering 64 bits."""
    n = threshold + 1
    widths = [HASH_BITS // n + (1 if i < HASH_BITS % n else 0) for i in range(n)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def _dhash_series(content: pd.Series) -> pd.Series:
    return pd.Series([dhash(b) for b in content], dtype="Int64")


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: str, b: str) -> None:
        self.parent.setdefault(a, a)
        self.parent.setdefault(b, b)
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def group_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """sha256 -> group id (smallest sha256 in its connected component)."""
    uf = _UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    return {x: uf.find(x) for x in list(uf.parent)}


def near_duplicate_pairs(
    hashes: DataFrame, *, threshold: int, other: DataFrame | None = None, small: bool = False
) -> DataFrame:
    """Pairs (x < y by sha256) of rows whose ``phash_l`` differ in at most ``threshold`` bits;
    with ``other``, pairs (x from ``hashes``, y from ``other``) instead.

    Only rows sharing one of threshold+1 exact bands are compared (pigeonhole), instead of
    all n^2/2 pairs; bench/bench_spark_dedup.py checks both give the same pairs.  ``small``:
    ``hashes`` are few (an incremental run's new images), so their bands are broadcast and
    ``other`` (the stored index) is streamed past them, never shuffled.
    """
    from pyspark.sql import functions as F

    def band_value(shift: int, width: int):
        mask = -1 if width >= HASH_BITS else (1 << width) - 1  # a Java long has no 2^64-1
        return F.shiftrightunsigned("phash_l", shift).bitwiseAND(F.lit(mask))

    spec = bands(threshold)

    def banded(frame: DataFrame) -> DataFrame:
        band_cols = [F.struct(F.lit(i).alias("band"), band_value(s, w).alias("value")) for i, (s, w) in enumerate(spec)]
        return (
            frame.where(F.col("phash_l").isNotNull())
            .select("sha256", "phash_l", F.explode(F.array(*band_cols)).alias("b"))
            .select("sha256", "phash_l", "b.band", "b.value")
        )

    a, b = banded(hashes).alias("a"), banded(hashes if other is None else other).alias("b")
    if small:
        a = F.broadcast(a).alias("a")
    xor = F.col("a.phash_l").bitwiseXOR(F.col("b.phash_l"))
    # a pair sharing several bands is kept only on the first one it shares (no distinct() shuffle)
    shared = [
        F.when(F.shiftrightunsigned(xor, s).bitwiseAND(F.lit(-1 if w >= HASH_BITS else (1 << w) - 1)) == 0, F.lit(i))
        for i, (s, w) in enumerate(spec)
    ]
    first_shared = F.least(*shared) if len(shared) > 1 else F.lit(0)
    joined = a.join(b, (F.col("a.band") == F.col("b.band")) & (F.col("a.value") == F.col("b.value")))
    if other is None:
        joined = joined.where(F.col("a.sha256") < F.col("b.sha256"))
    return (
        joined.where(F.bit_count(xor) <= threshold)
        .where(F.col("a.band") == first_shared)
        .select(F.col("a.sha256").alias("x"), F.col("b.sha256").alias("y"))
    )


def _check_threshold(threshold: int) -> None:
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold < HASH_BITS:
        raise ValueError(f"threshold must be an integer number of bits in 0..63, got {threshold!r}")


def per_content(images: DataFrame) -> DataFrame:
    """One row per sha256: its bytes, what the canonical choice ranks by, and how many rows had it."""
    from pyspark.sql import functions as F

    return images.groupBy("sha256").agg(
        F.first("content", ignorenulls=True).alias("content"),
        F.max("width").alias("width"),
        F.max("height").alias("height"),
        F.first("format", ignorenulls=True).alias("format"),
        F.max("size_bytes").alias("size_bytes"),
        F.count(F.lit(1)).alias("exact_copies"),
    )


def with_phash(per_sha: DataFrame, *, where: Column | None = None, checkpoint: bool = True) -> DataFrame:
    """``per_sha`` with its dHash as ``phash_l`` instead of the bytes, decoded once (only the
    rows ``where`` holds, the others get null), kept on the executors unless not ``checkpoint``."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    dhash_udf = F.pandas_udf(_dhash_series, T.LongType())  # type: ignore[call-overload]  # pyspark's stubs expect type hints this series function takes from pandas
    content = F.col("content") if where is None else F.when(where, F.col("content"))
    out = per_sha.withColumn("phash_l", dhash_udf(content)).drop("content")
    return out.localCheckpoint() if checkpoint else out


def grouped_frame(grouped: DataFrame) -> DataFrame:
    """The table's rows from one row per sha256 with its ``group_id``: canonical, distance."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rank = Window.partitionBy("group_id").orderBy(
        (F.coalesce("width", F.lit(0)).cast("bigint") * F.coalesce("height", F.lit(0)).cast("bigint")).desc(),
        F.when(F.col("format") == "png", 0).otherwise(1),
        F.col("size_bytes").desc_nulls_last(),
        F.col("sha256"),
    )
    ranked = grouped.withColumn("_rank", F.row_number().over(rank))
    canon = ranked.where("_rank = 1").select(
        "group_id", F.col("sha256").alias("canonical_sha256"), F.col("phash_l").alias("canon_phash")
    )
    phash_str = F.lower(F.lpad(F.hex("phash_l"), 16, "0"))
    return ranked.join(canon, "group_id").select(
        "sha256",
        "canonical_sha256",
        F.when(F.col("phash_l").isNotNull(), phash_str).alias("phash"),
        F.when(F.col("sha256") == F.col("canonical_sha256"), F.lit(0))
        .otherwise(F.bit_count(F.col("phash_l").bitwiseXOR(F.col("canon_phash"))))
        .cast("int")
        .alias("distance"),
        (F.col("sha256") == F.col("canonical_sha256")).alias("is_canonical"),
        F.col("exact_copies").cast("int").alias("exact_copies"),
        "width",
        "height",
        "format",
        "size_bytes",
    )


def duplicates_frame(spark: SparkSession, images: DataFrame, *, threshold: int = DEFAULT_THRESHOLD) -> DataFrame:
    """The dedup itself, on any DataFrame with sha256, content, width, height, format, size_bytes."""
    from pyspark.sql import functions as F

    _check_threshold(threshold)
    # 1. exact duplicates: one row per content hash, remembering how many bronze rows had it
    per_sha = with_phash(per_content(images))
    # 2. near-duplicate pairs (banded candidates, verified by the full Hamming distance)
    pairs = near_duplicate_pairs(per_sha, threshold=threshold)
    groups = group_pairs((r.x, r.y) for r in pairs.toLocalIterator())
    group_df = spark.createDataFrame(list(groups.items()), "sha256 string, group_id string")
    # 3. canonical per group, distance of every member to it
    return grouped_frame(
        per_sha.join(F.broadcast(group_df), "sha256", "left").withColumn("group_id", F.coalesce("group_id", "sha256"))
    )


def dedup_images(
    spark: SparkSession,
    lake: Lake,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    source: str = SOURCE,
    target: str = TARGET,
    inputs: ModelInputs | None = None,
    increment: Increment | None = None,
) -> SparkModelResult:
    """Rebuild ``silver.image_duplicates`` over the whole of ``bronze.images`` (atomic overwrite),
    or with an ``increment`` (``transforms.spark.common.increment_since``) merge in what its new
    images change.

    ``inputs`` (from ``transforms.spark.model_inputs``) pins the source version read and is
    recorded in the commit.
    """
    version = inputs.source_version if inputs is not None else None
    if increment is not None and inputs is not None:
        return _merge_new_images(spark, lake, increment, inputs, threshold=threshold, source=source, target=target)
    images = read_delta(spark, lake, source, model="dedup_images", version=version)
    out = duplicates_frame(spark, images, threshold=threshold).orderBy("canonical_sha256", "sha256")
    return overwrite_delta(spark, lake, target, out, name="dedup_images", inputs=inputs)


def _merge_new_images(
    spark: SparkSession,
    lake: Lake,
    increment: Increment,
    inputs: ModelInputs,
    *,
    threshold: int,
    source: str,
    target: str,
) -> SparkModelResult:
    from pyspark.sql import functions as F

    _check_threshold(threshold)
    model = "dedup_images"
    stored = read_delta(spark, lake, target, model=model, version=increment.target_version).withColumn(
        "phash_l",
        F.conv("phash", 16, -10).cast("long"),  # the hex back to the signed 64 bits
    )
    # one action brings the new contents to the driver (a few rows per new image, no bytes):
    # each with its dHash, or, for contents seen before (re-ingested copies, which only count
    # up and are not decoded again), the canonical of their stored group
    new = per_content(read_appended(spark, lake, source, increment, model=model, version=inputs.source_version))
    # the stored rows of the new contents: the few new keys go to every stored file, not the
    # stored table through a shuffle
    known = stored.join(F.broadcast(new.select("sha256")), "sha256").select(
        "sha256", F.col("canonical_sha256").alias("_known")
    )
    arrived = with_phash(new.join(known, "sha256", "left"), where=F.col("_known").isNull(), checkpoint=False)
    rows = arrived.toArrow()
    local = spark.createDataFrame(rows, schema=arrived.schema)
    seen = local.where(F.col("_known").isNotNull())
    unseen = local.where(F.col("_known").isNull()).drop("_known")
    index = stored.select("sha256", "phash_l")
    canonical_of = stored.select(F.col("sha256").alias("y"), "canonical_sha256")
    # near-duplicate pairs among the new images and with the stored index, in one action
    found = (
        near_duplicate_pairs(unseen, threshold=threshold, small=True)
        .select("x", "y", F.lit(False).alias("stored"))
        .unionByName(
            F.broadcast(near_duplicate_pairs(unseen, threshold=threshold, other=index, small=True))
            .join(canonical_of, "y")
            .select("x", F.col("canonical_sha256").alias("y"), F.lit(True).alias("stored"))
        )
        .collect()
    )
    edges = [(r.x, r.y) for r in found if not r.stored]
    joins = [(r.x, r.y) for r in found if r.stored]  # joining a stored image joins its whole group
    groups = group_pairs(edges + joins)
    touched = {c for _, c in joins} | set(rows.column("_known").drop_null().to_pylist())
    group_df = spark.createDataFrame(
        [(k, groups.get(k, k)) for k in touched | set(groups)], "key string, group_id string"
    )
    copies = seen.select(
        "sha256",
        F.col("exact_copies").alias("new_copies"),
        F.col("width").alias("new_width"),
        F.col("height").alias("new_height"),
        F.col("format").alias("new_format"),
        F.col("size_bytes").alias("new_size"),
    )
    members = (
        stored.join(F.broadcast(group_df.withColumnRenamed("key", "canonical_sha256")), "canonical_sha256")
        .join(F.broadcast(copies), "sha256", "left")
        .select(
            "sha256",
            "group_id",
            "phash_l",
            F.greatest("width", "new_width").alias("width"),
            F.greatest("height", "new_height").alias("height"),
            F.coalesce("format", "new_format").alias("format"),
            F.greatest("size_bytes", "new_size").alias("size_bytes"),
            (F.col("exact_copies") + F.coalesce("new_copies", F.lit(0))).alias("exact_copies"),
        )
    )
    fresh = unseen.join(F.broadcast(group_df.withColumnRenamed("key", "sha256")), "sha256", "left").withColumn(
        "group_id", F.coalesce("group_id", "sha256")
    )
    # the changed rows, computed once and kept on the executors for MERGE's two passes
    changes = grouped_frame(members.unionByName(fresh.select(*members.columns))).localCheckpoint()
    values = {c: f"s.{c}" for c in changes.columns}
    # a stored row changes only in a touched group; the rest are new contents.  Saying so in the
    # condition lets Delta skip every file whose canonical_sha256 range holds no touched group
    # (the table is written in that order), and with no touched group MERGE only inserts
    if touched:
        condition = (F.col("t.sha256") == F.col("s.sha256")) & F.col("t.canonical_sha256").isin(sorted(touched))
        clauses = lambda t: (  # noqa: E731 - the two MERGE shapes side by side read best as lambdas
            t.merge(changes.alias("s"), condition).whenMatchedUpdate(set=values).whenNotMatchedInsert(values=values)
        )
    else:
        clauses = lambda t: t.merge(changes.alias("s"), F.lit(False)).whenNotMatchedInsert(values=values)  # noqa: E731 - as above
    return merge_delta(spark, lake, target, increment, clauses, name=model, inputs=inputs)
