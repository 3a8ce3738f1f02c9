"""The compose stack's seed job: demo source files on the shared volume, photos in Postgres.

Writes the deterministic sample (``ingest.sample.generate_sample``) under LAKEHOUSE_SAMPLE_DIR
and copies its ``photos`` table into the source database at LAKEHOUSE_SOURCE_DB_URL, so the
worker ingests images and logs from files and the table from a real database server.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ingest.errors import ConfigError, IngestError


def seed_sources(dest: str | os.PathLike[str], db_url: str, *, table: str = "photos") -> dict:
    """Generate the sample under ``dest`` (once) and replace ``table`` in ``db_url`` with its rows."""
    import sqlalchemy as sa

    from ingest.sample import generate_sample

    root = Path(dest)
    if not db_url or "://" not in db_url:
        raise ConfigError(f"source database URL {db_url!r} is not a SQLAlchemy URL (postgresql+psycopg://user:pw@host/db)")
    db_path = root / "photos.db"
    if not db_path.exists():
        generate_sample(root)
    src = sa.create_engine(f"sqlite:///{db_path}")
    dst = sa.create_engine(db_url)
    try:
        src_md = sa.MetaData()
        src_table = sa.Table(table, src_md, autoload_with=src)
        with src.connect() as con:
            rows = [dict(r._mapping) for r in con.execute(sa.select(src_table))]
        dst_table = src_table.to_metadata(sa.MetaData())
        with dst.begin() as con:
            dst_table.drop(con, checkfirst=True)
            dst_table.create(con)
            if rows:
                con.execute(dst_table.insert(), rows)
    except sa.exc.OperationalError as exc:
        raise IngestError(f"cannot seed {table} into the source database: {str(exc.orig).splitlines()[0]}") from None
    finally:
        src.dispose()
        dst.dispose()
    return {"sample_dir": str(root), "table": table, "rows": len(rows)}


def main() -> int:
    dest = os.environ.get("LAKEHOUSE_SAMPLE_DIR", "/data/sources")
    url = os.environ.get("LAKEHOUSE_SOURCE_DB_URL", "")
    try:
        print(json.dumps(seed_sources(dest, url)))
    except (IngestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
