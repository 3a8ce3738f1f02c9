"""ingest.conform: the one lossless cast. A value is stored exactly or refused, never rounded;
the policy says what a refusal does (a model's write fails, a source's record is quarantined)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from ingest.conform import conform
from ingest.delta import write_batch
from ingest.errors import SchemaConflict, error_line
from ingest.lake import Lake

TARGET = pa.schema([("price", pa.decimal128(10, 2)), ("at", pa.timestamp("us", tz="UTC")), ("n", pa.int32())])


def test_both_policies_accept_and_refuse_the_same_values() -> None:
    exact = pa.table({"price": ["1.50", "-3"], "at": ["2024-01-01T02:00:00+02:00", None], "n": [1, 2**31 - 1]})
    for policy in ("raise", "quarantine"):
        good, bad = conform(exact, TARGET, policy=policy)
        assert bad == [] and good.schema == TARGET, policy
        assert good.to_pylist()[0] == {"price": Decimal("1.50"), "at": datetime(2024, 1, 1, tzinfo=UTC), "n": 1}
    lossy = pa.table({"price": ["1.50", "1.234"], "at": [None, None], "n": [1, 2**31]})
    with pytest.raises(SchemaConflict, match=r"price: decimal128\(10, 2\) -> string, n: int32 -> int64"):
        conform(lossy, TARGET, policy="raise", table="gold.prices")
    good, bad = conform(lossy, TARGET, policy="quarantine")
    assert good.to_pylist() == [{"price": Decimal("1.50"), "at": None, "n": 1}]
    assert [i for i, _ in bad] == [1] and "price" in bad[0][1]


def test_an_append_of_text_onto_a_decimal_column_is_stored_exactly_or_refused(local_lake: Lake) -> None:
    """A model (policy raise) writing prices as text: exact text is parsed, rounding text refused."""
    write_batch(local_lake, "gold.prices", pa.table({"price": pa.array([Decimal("2.00")], pa.decimal128(10, 2))}))
    write_batch(local_lake, "gold.prices", pa.table({"price": ["1.50"]}))
    stored = local_lake.delta_table("gold.prices").to_pyarrow_table()
    assert stored.schema.field("price").type == pa.decimal128(10, 2)
    assert sorted(stored["price"].to_pylist()) == [Decimal("1.50"), Decimal("2.00")]
    with pytest.raises(SchemaConflict) as err:
        write_batch(local_lake, "gold.prices", pa.table({"price": ["1.234"]}))
    assert error_line(err.value) == ("gold.prices: incompatible column types (price: decimal128(10, 2) -> string)", 2)
    assert local_lake.delta_table("gold.prices").count() == 2
