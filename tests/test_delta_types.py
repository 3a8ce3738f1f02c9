"""ingest.delta stores plain string/binary/list types on every write path (issue #13): input in
view or large types, and the files delta-rs's own merge and delete write as string_view."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ingest.delta import delete_rows, merge_batch, write_batch
from ingest.lake import Lake


def file_types(lake: Lake, table: str) -> set[str]:
    return {str(t) for uri in lake.delta_table(table).file_uris() for t in pq.read_schema(uri).types}


def test_view_and_large_input_is_stored_plain(local_lake: Lake) -> None:
    data = pa.table({
        "s": pa.array(["Oslo", "Lima"], pa.string_view()),
        "b": pa.array([b"x", b"y"], pa.binary_view()),
        "l": pa.array([["a"], ["b", "c"]], pa.large_list(pa.large_string())),
        "st": pa.array([{"k": "v"}, {"k": "w"}], pa.struct([("k", pa.string_view())])),
    })
    write_batch(local_lake, "bronze.typed", data)
    write_batch(local_lake, "bronze.typed", data.slice(0, 1))  # append (conform) path
    stored = file_types(local_lake, "bronze.typed")
    assert not [t for t in stored if "view" in t or "large" in t], stored
    assert {"string", "binary", "struct<k: string>"} <= stored
    ds = local_lake.delta_table("bronze.typed").to_pyarrow_dataset()
    assert ds.to_table(filter=pads.field("s") == "Oslo").num_rows == 2


def test_merge_and_delete_leave_plain_files_with_the_same_rows(local_lake: Lake) -> None:
    rows = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "place": ["Oslo", "Lima", "Oslo"], "raw": [b"a", b"b", b"c"]})
    write_batch(local_lake, "silver.m", rows)
    merge_batch(local_lake, "silver.m", pa.table({"id": pa.array([2, 4], pa.int64()), "place": ["Oslo", "Kyoto"],
                                                  "raw": [b"B", b"d"]}), keys=["id"], metadata={"run_id": "r1"})
    assert file_types(local_lake, "silver.m") == {"int64", "string", "binary"}
    dt = local_lake.delta_table("silver.m")
    assert sorted(dt.to_pyarrow_table().to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "place": "Oslo", "raw": b"a"}, {"id": 2, "place": "Oslo", "raw": b"B"},
        {"id": 3, "place": "Oslo", "raw": b"c"}, {"id": 4, "place": "Kyoto", "raw": b"d"},
    ]
    # the copies keep the file statistics (file skipping and `rows_loaded_since` use them)
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    assert sum(a["num_records"] for a in adds) == 4 and all(a.get("min.id") is not None for a in adds)
    assert dt.to_pyarrow_dataset().to_table(filter=pads.field("place") == "Oslo").num_rows == 3
    delete_rows(local_lake, "silver.m", "id = 1")
    assert file_types(local_lake, "silver.m") == {"int64", "string", "binary"}
    assert local_lake.dataset("silver.m").to_table(filter=pads.field("place") == "Oslo").num_rows == 2


def test_merge_bounded_by_the_source_key_range_updates_and_inserts_exactly(local_lake: Lake) -> None:
    """merge_batch adds the source's key range to the merge predicate (file skipping): keys at
    both ends of the range, outside the stored ones, and quoted strings still merge right."""
    keys = ["a'1", "b", "c", "d"]
    write_batch(local_lake, "silver.k", pa.table({"k": keys, "n": pa.array([1, 2, 3, 4], pa.int64())}))
    write_batch(local_lake, "silver.k", pa.table({"k": ["x", "y"], "n": pa.array([5, 6], pa.int64())}))
    merge_batch(local_lake, "silver.k", pa.table({"k": ["a'1", "c", "zz"], "n": pa.array([10, 30, 70], pa.int64())}),
                keys=["k"])
    got = {r["k"]: r["n"] for r in local_lake.delta_table("silver.k").to_pyarrow_table().to_pylist()}
    assert got == {"a'1": 10, "b": 2, "c": 30, "d": 4, "x": 5, "y": 6, "zz": 70}
    merge_batch(local_lake, "silver.k", pa.table({"k": ["y"], "n": pa.array([60], pa.int64())}), keys=["k"])
    assert local_lake.delta_table("silver.k").to_pyarrow_table().num_rows == 7


def test_a_swap_after_another_writer_compacted_the_file_is_dropped_not_doubled(local_lake: Lake, monkeypatch) -> None:
    """The swap of a merge's string_view file for a plain copy loses a race to an optimize that
    compacted that file meanwhile: the swap is dropped (delta-rs would let it commit, and the
    file's rows would be there twice: bench/repro/swap_after_compaction.py)."""
    import ingest.delta as delta

    write_batch(local_lake, "silver.s", pa.table({"id": pa.array(range(50), pa.int64()), "s": [f"a{i}" for i in range(50)]}))
    write_batch(local_lake, "silver.s", pa.table({"id": pa.array(range(50, 100), pa.int64()), "s": [f"b{i}" for i in range(50)]}))
    dt = local_lake.delta_table("silver.s")
    dt.merge(pa.table({"id": pa.array([1], pa.int64()), "s": ["new"]}), predicate="t.id = s.id", source_alias="s",
             target_alias="t").when_matched_update_all().execute()  # delta-rs writes the rewritten file as string_view
    version = local_lake.delta_table("silver.s").version()
    views: list[bool] = []
    real = delta.has_view_types

    def compacted_meanwhile(schema):
        if not views:  # the swap has read the table and is copying the file: another writer compacts it
            local_lake.delta_table("silver.s").optimize.compact()
        views.append(real(schema))
        return views[-1]

    monkeypatch.setattr(delta, "has_view_types", compacted_meanwhile)
    assert delta.plain_files(local_lake, "silver.s", version) == 0
    assert views == [True]  # the swap was attempted
    ids = local_lake.delta_table("silver.s").to_pyarrow_table()["id"].to_pylist()
    assert sorted(ids) == list(range(100))
