"""cursor_lag from lakehouse.yaml reaches the load: a row committed late (an older cursor value
inside the lag) is picked up by the next scheduled run (issue #13, item 8)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ingest.lake import Lake
from ingest.pipeline import ingest_source, sources_of
from ingest.settings import load_settings


def make_source(path: Path) -> str:
    con = sqlite3.connect(path)
    con.execute("create table photos (photo_id integer primary key, place text, updated_at text not null)")
    con.executemany("insert into photos values (?, ?, ?)", [(1, "Oslo", "2026-11-01 00:00:10"), (2, "Lima", "2026-11-01 00:00:20")])
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def commit_late_row(url: str) -> None:
    """A transaction that started earlier commits now: its cursor value is below the lake's max."""
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("insert into photos values (3, 'Kyoto', '2026-11-01 00:00:15')")
    con.commit()
    con.close()


@pytest.mark.parametrize("lag, late_row_loaded", [(30, True), (None, False)])
def test_cursor_lag_from_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lag, late_row_loaded) -> None:
    for k in [k for k in __import__("os").environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(k)
    url = make_source(tmp_path / "src.db")
    config = tmp_path / "lakehouse.yaml"
    lag_line = f", cursor_lag: {lag}" if lag is not None else ""
    config.write_text(
        f"lake: {tmp_path / 'lake'}\n"
        "sources:\n"
        f'  - {{kind: tables, url: "{url}", source_table: photos, table: bronze.photos, cursor: updated_at{lag_line}}}\n'
    )
    monkeypatch.setenv("LAKEHOUSE_CONFIG", str(config))
    settings = load_settings()
    (source,) = sources_of(settings)
    assert source.cursor_lag == (lag or 0)
    lake = Lake.from_settings(settings)
    assert ingest_source(lake, source)["rows_written"] == 2
    commit_late_row(url)
    again = ingest_source(lake, source)
    assert again["rows_written"] == (1 if late_row_loaded else 0)
    ids = sorted(lake.delta_table("bronze.photos").to_pyarrow_table(columns=["photo_id"])["photo_id"].to_pylist())
    assert ids == ([1, 2, 3] if late_row_loaded else [1, 2])


def test_negative_cursor_lag_in_the_config_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    config = tmp_path / "lakehouse.yaml"
    config.write_text(
        "sources:\n  - {kind: tables, url: 'sqlite:///x.db', source_table: p, table: bronze.p, cursor: c, cursor_lag: -5}\n"
    )
    monkeypatch.setenv("LAKEHOUSE_CONFIG", str(config))
    with pytest.raises(ValidationError, match="cursor_lag"):
        load_settings()
