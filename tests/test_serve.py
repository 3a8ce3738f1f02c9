"""`ingest serve`: a real server process, queried with Debian's `psql` and with psycopg."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.delta import write_batch
from ingest.lake import Lake
from tests.conftest import _stop, _wait_for, free_ports

pytestmark = pytest.mark.integration

INGEST = str(Path(sys.executable).parent / "ingest")
PSQL = shutil.which("psql") or "/usr/bin/psql"
PASSWORD = "s3cret-for-tests"


def _cli(lake: Lake, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([INGEST, "--lake", lake.uri, *argv], capture_output=True, text=True, timeout=120,
                          env=env or os.environ.copy())


def _orders(ids: list[int], users: list[int], amounts: list[int]) -> pa.Table:
    return pa.table({
        "order_id": pa.array(ids, pa.int64()), "user_id": pa.array(users, pa.int64()),
        "amount": pa.array(amounts, pa.int32()),
    })


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """gold.users and gold.orders; snapshot `before` pins orders with 3 rows, then a 4th row lands."""
    root = tmp_path_factory.mktemp("serve") / "lake"
    root.mkdir()
    lake = Lake(str(root))
    write_batch(lake, "gold.users", pa.table({
        "user_id": pa.array([1, 2], pa.int64()), "name": ["ann", "bob"],
        "signed_up": pa.array([datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)] * 2,
                              pa.timestamp("us", tz="UTC")),
    }))
    write_batch(lake, "gold.orders", _orders([10, 11, 12], [1, 1, 2], [5, 7, 9]))
    done = _cli(lake, "snapshot", "create", "before")
    assert done.returncode == 0, done.stderr
    write_batch(lake, "gold.orders", _orders([13], [2], [100]))
    return lake


def _start(lake: Lake, *args: str, password: str | None = PASSWORD, log: Path) -> tuple[subprocess.Popen, int]:
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSE_SERVE_PASSWORD"}
    if password:
        env["LAKEHOUSE_SERVE_PASSWORD"] = password
    proc = subprocess.Popen(
        [INGEST, "--lake", lake.uri, "serve", "--port", str(port), *args],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env, start_new_session=True,
    )

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    try:
        _wait_for(listening, timeout=60, what="ingest serve", proc=proc, log=log)
    except BaseException:
        _stop(proc)
        raise
    return proc, port


@pytest.fixture(scope="module")
def server(lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL (without password) of an `ingest serve` over ``lake``."""
    proc, port = _start(lake, log=tmp_path_factory.mktemp("serve-log") / "serve.log")
    try:
        yield f"postgresql://analyst@127.0.0.1:{port}/lake"
    finally:
        _stop(proc)


def psql(url: str, *commands: str, password: str = PASSWORD, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = [PSQL, url, "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", *extra]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, "PGPASSWORD": password})


def connect(url: str, **kw):
    import psycopg

    return psycopg.connect(url, password=PASSWORD, connect_timeout=20, **kw)


def test_psql_lists_tables_and_joins_gold_tables(server: str) -> None:
    listed = psql(server, r"\dt")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("|")[:2] for line in listed.stdout.split()]
    assert ["gold", "orders"] in rows and ["gold", "users"] in rows
    joined = psql(server, "select u.name, sum(o.amount) from gold.users u join gold.orders o using (user_id) group by 1 order by 1")
    assert joined.returncode == 0, joined.stderr
    assert joined.stdout.split() == ["ann|12", "bob|109"]


def test_psql_wrong_password_is_refused(server: str) -> None:
    done = psql(server, "select 1", password="wrong")
    assert done.returncode != 0
    assert "password authentication failed" in done.stderr and done.stdout == ""


def test_bi_tool_catalog_queries(server: str) -> None:
    with connect(server) as con:
        cur = con.cursor()
        cur.execute("SET application_name = 'metabase'")  # clients' own settings are accepted
        cur.execute("select table_schema, table_name from information_schema.tables where table_schema = 'gold' order by 2")
        assert cur.fetchall() == [("gold", "orders"), ("gold", "users")]
        cur.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'gold' and table_name = 'users' order by ordinal_position"
        )
        assert cur.fetchall() == [("user_id", "BIGINT"), ("name", "VARCHAR"), ("signed_up", "TIMESTAMP WITH TIME ZONE")]
        cur.execute("select nspname from pg_catalog.pg_namespace where nspname in ('bronze', 'silver', 'gold') order by 1")
        assert [r[0] for r in cur.fetchall()] == ["bronze", "gold", "silver"]
        cur.execute(
            "select c.relname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'gold' order by 1"
        )
        assert [r[0] for r in cur.fetchall()] == ["orders", "users"]
        cur.execute("select typname from pg_catalog.pg_type where typname = 'int8'")
        assert cur.fetchall() == [("int8",)]
        cur.execute("select pg_catalog.version(), current_schema()")
        version, schema = cur.fetchone()
        assert version.startswith("PostgreSQL ") and schema == "main"
        cur.execute("SHOW TRANSACTION ISOLATION LEVEL")
        assert cur.fetchone() is not None
        cur.execute("select name, signed_up from gold.users where user_id = %s", (2,))
        assert cur.fetchall() == [("bob", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))]
        cur.execute("select user_id from gold.users where name = %s", ("bob",))  # a str parameter stays a str
        assert cur.fetchall() == [(2,)]
        binary = con.cursor(binary=True)  # asked for binary rows, the server answers in text and says so
        binary.execute("select -user_id, signed_up from gold.users where user_id = 1")
        assert binary.fetchall() == [(-1, datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))]


def test_prepared_statement_with_varchar_parameter(server: str) -> None:
    """JDBC tools (DBeaver, Metabase) prepare, describe, then execute, typing strings as varchar."""
    with connect(server, autocommit=True) as con:
        pg = con.pgconn
        prepared = pg.prepare(b"by_name", b"select user_id, name from gold.users where name = $1", [1043])
        assert prepared.error_message == b""
        described = pg.describe_prepared(b"by_name")
        assert described.error_message == b""
        assert [described.fname(i) for i in range(described.nfields)] == [b"user_id", b"name"]
        result = pg.exec_prepared(b"by_name", [b"ann"])
        assert result.error_message == b"" and result.ntuples == 1
        assert (result.get_value(0, 0), result.get_value(0, 1)) == (b"1", b"ann")


def test_sqlalchemy_engine(server: str) -> None:
    """SQLAlchemy's psycopg dialect looks up types and nests transactions with savepoints on connect."""
    import sqlalchemy as sa

    engine = sa.create_engine(server.replace("postgresql://analyst@", f"postgresql+psycopg://analyst:{PASSWORD}@"))
    try:
        with engine.connect() as con:
            rows = con.execute(sa.text("select order_id from gold.orders where user_id = :u order by 1"), {"u": 2}).all()
            assert [r[0] for r in rows] == [12, 13]
            assert sorted(sa.inspect(con).get_view_names(schema="gold")) == ["orders", "users"]
            with con.begin_nested():
                assert con.execute(sa.text("select count(*) from gold.users")).scalar() == 2
    finally:
        engine.dispose()


def test_snapshot_and_version_from_plain_sql(server: str) -> None:
    q = "select order_id from gold.orders order by 1"
    with connect(server, autocommit=True) as con:
        assert [r[0] for r in con.execute(q)] == [10, 11, 12, 13]
        con.execute("SET lakehouse.as_of = 'before'")
        assert [r[0] for r in con.execute(q)] == [10, 11, 12]
        assert con.execute("SHOW lakehouse.as_of").fetchone() == ("before",)
        con.execute("SET lakehouse.as_of TO 0")  # a Delta version number, as `ingest sql --as-of 0`
        assert [r[0] for r in con.execute(q)] == [10, 11, 12]
        con.execute("RESET lakehouse.as_of")
        assert [r[0] for r in con.execute(q)] == [10, 11, 12, 13]
        with pytest.raises(Exception, match="nope"):
            con.execute("SET lakehouse.as_of = 'nope'")
    # pinned at connect time, as a BI tool's data source would be
    done = psql(server.replace("/lake", "/lake?options=-c%20lakehouse.as_of%3Dbefore"), q)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10", "11", "12"]


def test_open_session_follows_new_commits(server: str, lake: Lake) -> None:
    write_batch(lake, "gold.events", pa.table({"n": pa.array([1], pa.int64())}))
    with connect(server, autocommit=True) as con:
        assert con.execute("select count(*) from gold.events").fetchone() == (1,)
        write_batch(lake, "gold.events", pa.table({"n": pa.array([2, 3], pa.int64())}))
        assert con.execute("select sum(n) from gold.events").fetchone() == (6,)


@pytest.mark.parametrize("statement", [
    "insert into gold.orders values (99, 1, 1)",
    "create table gold.x as select 1 as a",
    "copy (select * from gold.users) to 'OUT'",
    "select * from read_csv('SECRET')",
    "attach 'OUT' as other",
    "install httpfs",
])
def test_writes_and_file_reads_are_refused(server: str, statement: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("token\nhunter2\n")
    out = tmp_path / "out.csv"
    sql = statement.replace("OUT", str(out)).replace("SECRET", str(secret))
    done = psql(server, sql)
    assert done.returncode != 0 and "ERROR" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr and not out.exists()
    still = psql(server, "select count(*) from gold.orders")  # the lake is unchanged
    assert still.stdout.split() == ["4"]


def test_twenty_concurrent_clients(server: str) -> None:
    clients = 20
    barrier = threading.Barrier(clients, timeout=120)
    results: dict[int, object] = {}

    def client(i: int) -> None:
        try:
            with connect(server, autocommit=True) as con:
                barrier.wait()  # all 20 sessions are open at once before any queries
                user = 1 + i % 2
                row = con.execute(
                    "select count(*), sum(o.amount) + %s from gold.orders o join gold.users u using (user_id) where u.user_id = %s",
                    (i, user),
                ).fetchone()
                results[i] = row
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = exc
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    expected = {i: ((2, 12 + i) if i % 2 == 0 else (2, 109 + i)) for i in range(clients)}
    assert results == expected


def test_non_loopback_host_without_password_is_refused(lake: Lake) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSE_SERVE_PASSWORD"}
    done = _cli(lake, "serve", "--host", "0.0.0.0", "--port", str(free_ports(1)[0]), env=env)
    assert done.returncode != 0
    assert done.stderr.startswith("error: refusing to serve on 0.0.0.0 without a password")
    assert done.stderr.count("\n") == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return cert_path, key_path


def test_tls_when_given_a_certificate(lake: Lake, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    proc, port = _start(lake, "--tls-cert", str(cert), "--tls-key", str(key), log=tmp_path / "serve.log")
    try:
        url = f"postgresql://analyst@localhost:{port}/lake"
        verified = psql(f"{url}?sslmode=verify-full&sslrootcert={cert}", "select count(*) from gold.users", r"\conninfo")
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.split("\n")[0] == "2" and "SSL connection" in verified.stdout
        clear = psql(f"{url}?sslmode=disable", "select 1")
        assert clear.returncode != 0 and "requires TLS" in clear.stderr
    finally:
        _stop(proc)
