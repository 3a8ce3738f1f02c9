"""Minimal reproduction: a pyarrow dataset cannot filter a parquet file written as string_view.

Why DuckDB's join-filter pushdown was switched off in the dbt plugin (issue 16), reduced to
pyarrow + duckdb, no project code.  Versions seen: pyarrow 26.0.1, duckdb 1.5.6.

* A dataset whose schema says ``string`` over a file whose column is physically ``string_view``
  (what delta-rs 1.x merges wrote) fails any filtered read: pyarrow evaluates the filter against
  the file's own type, before casting to the dataset schema, and has no string/string_view
  comparison kernels.  Unfiltered reads work.  To report upstream (apache/arrow).
* DuckDB pushes a hash join's key range (and, for <= 50 keys, an IN list) into Arrow scans as
  such a filter, so a semi-join over that dataset fails; dbt ran it as a `unique` data test and
  the runner reported the test as failed, which read like a wrong result.  DuckDB returns the
  right rows whenever pyarrow can evaluate the filter (plain files): not a DuckDB bug.

    python bench/repro/pyarrow_string_view_filter.py     # prints the outcomes, exit 0
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sv-repro-"))
    pq.write_table(pa.table({"k": pa.array(["a", "b"], pa.string())}), tmp / "plain.parquet")
    pq.write_table(pa.table({"k": pa.array(["c", "d"], pa.string_view())}), tmp / "view.parquet")
    schema = pa.schema([("k", pa.string())])
    mixed = ds.dataset([str(tmp / "plain.parquet"), str(tmp / "view.parquet")], schema=schema)
    plain = ds.dataset([str(tmp / "plain.parquet")], schema=schema)

    print("pyarrow", pa.__version__, "duckdb", duckdb.__version__)
    print("unfiltered read of the mixed dataset:", mixed.to_table().num_rows, "rows")
    try:
        mixed.to_table(filter=pc.field("k") == "c")
        print("pyarrow filter on the string_view file: ok (fixed upstream)")
    except pa.ArrowNotImplementedError as exc:
        print("pyarrow filter on the string_view file:", exc)

    for pushdown in (False, True):
        con = duckdb.connect()
        if not pushdown:
            con.execute("set disabled_optimizers = 'join_filter_pushdown'")
        con.register("keys", pa.table({"k": pa.array(["c"])}))
        for name, data in (("plain", plain), ("mixed", mixed)):
            con.register("t", data)
            sql = "select k, count(*) from t where k in (select k from keys) group by k"
            try:
                out = con.execute(sql).fetchall()
            except duckdb.Error as exc:
                out = f"error: {str(exc).splitlines()[0]}"
            print(f"duckdb join_filter_pushdown={'on ' if pushdown else 'off'} {name:5} dataset: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
