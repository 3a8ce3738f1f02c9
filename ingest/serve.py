"""`ingest serve`: the lake over the PostgreSQL wire protocol, for analysts' SQL clients and BI tools.

The protocol is buenavista's (a PostgreSQL-wire server over DuckDB); this module supplies what
makes it the lake's endpoint:

* each client session gets its own in-memory DuckDB with one view per lake table, locked down
  exactly as ``ingest sql`` (``ingest.query``): only reads, no file or network access;
* ``layer.name`` follows the table's current Delta version at every statement, or the session's
  ``lakehouse.as_of`` (a snapshot name, version number or ISO timestamp, as ``ingest sql
  --as-of``), set with ``SET lakehouse.as_of = '...'`` or at connect time with
  ``options=-c lakehouse.as_of=...``;
* one password for any user name (md5 challenge), TLS when given a certificate, and the small
  answers PostgreSQL clients expect (``SHOW``, ``SET``, transactions, psql's ``\\dt``).
"""

from __future__ import annotations

import base64
import datetime
import enum
import hmac
import io
import ipaddress
import json
import logging
import re
import socket
import socketserver
import ssl
import struct
import sys
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from buenavista import postgres as bv
from buenavista.backends.duckdb import DuckDBQueryResult, RecordBatchIterator, to_bvtype
from buenavista.core import BVType, Connection, QueryResult, Session, SimpleQueryResult

from ingest.errors import ConfigError, IngestError
from ingest.lake import LAYERS, Lake, TableId, plain_dataset
from ingest.query import (
    check_read_only,
    lock_down,
    open_tables,
    referenced_tables,
    resolve_as_of,
)

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

PASSWORD_ENV = "LAKEHOUSE_SERVE_PASSWORD"
AS_OF_SETTING = "lakehouse.as_of"
SERVER_VERSION = "15.0"  # what clients are told; the SQL dialect is DuckDB's
log = logging.getLogger("ingest.serve")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 5433
    password: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __repr__(self) -> str:  # the password never reaches a log line or traceback
        return f"ServeConfig(host={self.host!r}, port={self.port}, password={'***' if self.password else None}, tls={self.tls_cert is not None})"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: ServeConfig) -> ssl.SSLContext | None:
    """Refuse unsafe or broken settings before listening; the TLS context when TLS is on."""
    if not 0 < config.port < 65536:
        raise ConfigError(f"--port {config.port} is not a TCP port (1-65535)")
    if not is_loopback(config.host) and not config.password:
        raise ConfigError(
            f"refusing to serve on {config.host} without a password: set {PASSWORD_ENV} "
            "(and give --tls-cert/--tls-key so it does not cross the network in clear)"
        )
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    if config.tls_cert is None or config.tls_key is None:
        return None
    for flag, path in (("--tls-cert", config.tls_cert), ("--tls-key", config.tls_key)):
        if not path.is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the TLS certificate/key: {exc}") from None
    return context


class _Datasets:
    """Each table version's dataset, built once and shared by the sessions (datasets are
    immutable); the newest few are kept."""

    def __init__(self, lake: Lake, *, keep: int = 256) -> None:
        self.lake, self._keep = lake, keep
        self._cache: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tid: TableId, version: int | str | None) -> Any:
        dt = self.lake.delta_table(tid, version=version)  # None: re-reads the log, so a new commit shows
        key = (str(tid), dt.version())
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        ds = plain_dataset(dt.to_pyarrow_dataset())
        with self._lock:
            self._cache[key] = ds
            while len(self._cache) > self._keep:
                self._cache.popitem(last=False)
        return ds


# -- the statements a PostgreSQL client sends that are not queries -----------------------------
_BEGIN = re.compile(r"^\s*(begin|start\s+transaction)\b", re.IGNORECASE)
_SAVEPOINT = re.compile(r"^\s*(savepoint|release|rollback\s+to)\b", re.IGNORECASE)
_END = re.compile(r"^\s*(commit|end|rollback|abort)\b", re.IGNORECASE)
_SET = re.compile(
    r"^\s*set\s+(?:session\s+|local\s+)?([\w.\"]+)\s*(?:=|\bto\b)\s*(.*?)\s*;?\s*$", re.IGNORECASE | re.DOTALL
)
_RESET = re.compile(r"^\s*reset\s+([\w.\"]+)\s*;?\s*$", re.IGNORECASE)
_SHOW = re.compile(r"^\s*show\s+(.+?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_IGNORED = re.compile(r"^\s*(set|discard|deallocate|close|unlisten|listen)\b", re.IGNORECASE)
_PG_SETTINGS = {
    "server_version": SERVER_VERSION,
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "datestyle": "ISO, MDY",
    "timezone": "UTC",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "transaction isolation level": "repeatable read",
    "transaction_isolation": "repeatable read",
    "default_transaction_read_only": "on",
    "transaction_read_only": "on",
    "is_superuser": "off",
    "max_identifier_length": "63",
    "application_name": "",
    "lc_collate": "C",
    "lc_ctype": "C",
}
# pg_catalog functions DuckDB lacks: psql's \dt and \d call them; defined per session
_MACROS = {
    "pg_get_userbyid": "create temp macro pg_get_userbyid(oid) as 'lakehouse'",
    "pg_encoding_to_char": "create temp macro pg_encoding_to_char(enc) as 'UTF8'",
    "pg_get_statisticsobjdef_columns": "create temp macro pg_get_statisticsobjdef_columns(oid) as null",
    "pg_get_serial_sequence": "create temp macro pg_get_serial_sequence(tbl, col) as null",
    "to_regtype": "create temp macro to_regtype(regtype_arg) as (select min(t.oid) from pg_catalog.pg_type t where t.typname = regtype_arg)",
}
_PG_FUNC = re.compile(r"\b(?:pg_catalog\s*\.\s*)?(" + "|".join(_MACROS) + r")\s*\(", re.IGNORECASE)
_VERSION = re.compile(r"\b(?:pg_catalog\s*\.\s*)?version\s*\(\s*\)", re.IGNORECASE)
_REWRITES = [
    # psql's \dt lists relkind 'r' (tables); the lake's tables are DuckDB views
    (re.compile(r"relkind\s+in\s+\('r',\s*'p',\s*''\)", re.IGNORECASE), "relkind IN ('r','p','v','')"),
    # psql's \d NAME: OPERATOR(pg_catalog.~) and COLLATE pg_catalog.default
    (re.compile(r"OPERATOR\s*\(\s*pg_catalog\s*\.\s*([~!=<>*]+)\s*\)", re.IGNORECASE), r"\1"),
    (re.compile(r"\s+COLLATE\s+pg_catalog\s*\.\s*\"?default\"?", re.IGNORECASE), ""),
    # psycopg's and SQLAlchemy's type lookups: x::regtype (DuckDB has no reg* types)
    (re.compile(r"::\s*(?:pg_catalog\s*\.\s*)?reg(?:type|class|proc|namespace)\b", re.IGNORECASE), ""),
]


def _setting_value(raw: str) -> str | None:
    """``'train-1'`` / ``3`` / ``DEFAULT`` -> the value (None: back to the current versions)."""
    value = raw.strip()
    if value.upper() in ("DEFAULT", "", "''"):
        return None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].replace(value[0] * 2, value[0])
    return value or None


def _one_row(name: str, value: str | None) -> SimpleQueryResult:
    return SimpleQueryResult(name, "" if value is None else value, BVType.TEXT)


class _PgType(enum.Enum):
    """Result types buenavista lacks (added to its type table below): values keep their time zone
    and nested values become JSON, never Python reprs."""

    TIMESTAMPTZ = 1184
    JSON = 114
    INTERVAL = 1186


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (Decimal, uuid.UUID, datetime.timedelta)):
        return str(value)
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


def _interval(v: Any) -> str:
    """PostgreSQL's interval output: ``1 mons 2 days 03:04:05.000006`` (DuckDB keeps microseconds)."""
    if isinstance(v, datetime.timedelta):
        months, days, micros = 0, v.days, v.seconds * 1_000_000 + v.microseconds
    else:  # pyarrow MonthDayNano
        months, days, micros = v.months, v.days, v.nanoseconds // 1000
    sign = "-" if micros < 0 else ""
    secs, us = divmod(abs(micros), 1_000_000)
    return f"{months} mons {days} days {sign}{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{us:06d}"


bv.BVTYPE_TO_PGTYPE.setdefault(_PgType.INTERVAL, (1186, _interval))
bv.BVTYPE_TO_PGTYPE.setdefault(_PgType.TIMESTAMPTZ, (1184, lambda v: v.isoformat(sep=" ")))
bv.BVTYPE_TO_PGTYPE.setdefault(_PgType.JSON, (114, lambda v: json.dumps(v, default=_json_default)))


def _pg_type(t: pa.DataType) -> Any:
    if pa.types.is_dictionary(t):
        return _pg_type(t.value_type)
    if pa.types.is_timestamp(t) and t.tz is not None:
        return _PgType.TIMESTAMPTZ
    if pa.types.is_nested(t):
        return _PgType.JSON
    if pa.types.is_integer(t) and t.bit_width == 64 or t in (pa.uint32(),):
        return BVType.BIGINT
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return BVType.BYTES
    if pa.types.is_null(t):
        return BVType.TEXT
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return _PgType.INTERVAL
    return to_bvtype(t)


class _Result(DuckDBQueryResult):
    """Rows always go out as text: the row description tells the client so, and buenavista's
    binary encoders fail on negative integers and time zone-aware timestamps."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        super().__init__(None)
        self.rbr, self.rbi = reader, RecordBatchIterator(reader)
        self.bvtypes = [_pg_type(f.type) for f in reader.schema]

    @property
    def result_format(self) -> list[int] | None:
        return None

    @result_format.setter
    def result_format(self, _requested: Any) -> None:
        pass


class _Status(QueryResult):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self._tag = tag

    def has_results(self) -> bool:
        return False

    def column_count(self) -> int:
        return 0

    def status(self) -> str:
        return self._tag


class LakeSession(Session):
    """One client: its own DuckDB (built after authentication, on the first statement)."""

    def __init__(self, lake: Lake, datasets: _Datasets, *, as_of: str | None = None) -> None:
        super().__init__()
        self.lake, self._datasets, self.as_of = lake, datasets, as_of
        self._con: duckdb.DuckDBPyConnection | None = None
        self._known: set[str] = set()
        self.in_txn = False

    # buenavista's Session API
    def cursor(self) -> Any:
        return self._connection()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def in_transaction(self) -> bool:
        return self.in_txn

    def execute_sql(self, sql: str, params: Any = None) -> QueryResult:
        handled = self._session_statement(sql)
        if handled is not None:
            return handled
        sql = _compat(sql)
        check_read_only(sql)
        con = self._connection()
        self._follow(referenced_tables(sql))
        try:
            con.execute(sql, params or None)
        except Exception as exc:  # noqa: BLE001 - one line for the client
            raise IngestError(f"query failed: {str(exc).splitlines()[0]}") from None
        if con.description is None:
            return _Status("SELECT 0")
        return _Result(con.fetch_record_batch())

    # the lake
    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            import duckdb

            con = duckdb.connect()
            try:
                for ddl in _MACROS.values():
                    con.execute(ddl)
                self._con = con
                self._point_all()
                for layer in LAYERS:  # every layer is a schema, even an empty one
                    con.execute(f'create schema if not exists "{layer}"')
                con.execute(f"set search_path = '{','.join(['main', *LAYERS])}'")
                con.execute("set TimeZone = 'UTC'")
                lock_down(con)
            except BaseException:
                self._con = None
                con.close()
                raise
        return self._con

    def _point_all(self) -> None:
        """Every table's view at the session's ``as_of``; a table the snapshot does not pin, or
        that has no such version, keeps its view (reading it names the problem)."""
        for tid in self.lake.list_tables():
            try:
                pinned: dict[str, int | str | None] = {str(tid): None}
                pinned.update(resolve_as_of(self.lake, self.as_of, [tid]))
                self._open(pinned)
            except IngestError:
                if str(tid) not in self._known:
                    self._open({str(tid): None})

    def _follow(self, tables: list[TableId]) -> None:
        """Re-point the views a statement names at the version it should read."""
        wanted = [t for t in tables if str(t) in self._known or self.lake.table_exists(t)]
        if wanted:
            pinned = resolve_as_of(self.lake, self.as_of, wanted)
            self._open({str(t): pinned.get(str(t)) for t in wanted})

    def _open(self, versions: dict[str, int | str | None]) -> None:
        assert self._con is not None  # internal invariant, not a data check
        open_tables(
            self.lake, self._con, {TableId.parse(t): v for t, v in versions.items()}, dataset=self._datasets.get
        )
        self._known.update(versions)

    # statements that are not queries
    def _session_statement(self, sql: str) -> QueryResult | None:
        if _BEGIN.match(sql):
            self.in_txn = True
            return _Status("BEGIN")
        if m := _SAVEPOINT.match(sql):  # SQLAlchemy and psycopg nest transactions with them
            return _Status(m.group(1).split()[0].upper())
        if m := _END.match(sql):
            self.in_txn = False
            return _Status("ROLLBACK" if m.group(1).lower() in ("rollback", "abort") else "COMMIT")
        if (m := _SET.match(sql)) and _name(m.group(1)) == AS_OF_SETTING:
            self.set_as_of(_setting_value(m.group(2)))
            return _Status("SET")
        if (m := _RESET.match(sql)) and _name(m.group(1)) in (AS_OF_SETTING, "all"):
            self.set_as_of(None)
            return _Status("RESET")
        if m := _SHOW.match(sql):
            name = _name(m.group(1))
            if name == AS_OF_SETTING:
                return _one_row(AS_OF_SETTING, self.as_of)
            if name in _PG_SETTINGS:
                return _one_row(name.replace(" ", "_"), _PG_SETTINGS[name])
            if name == "search_path":
                return _one_row("search_path", ", ".join(["main", *LAYERS]))
        if _IGNORED.match(sql) or _RESET.match(sql):
            # client settings (extra_float_digits, application_name, ...): the lake's are fixed
            return _Status(sql.split()[0].upper())
        return None

    def set_as_of(self, value: str | None) -> None:
        if value is not None:
            resolve_as_of(self.lake, value, [])  # an unknown snapshot or bad timestamp fails here
        self.as_of = value
        if self._con is not None:
            self._point_all()


def _name(raw: str) -> str:
    return " ".join(raw.replace('"', "").lower().split())


def _compat(sql: str) -> str:
    """Small rewrites so PostgreSQL clients' catalog queries run on DuckDB."""
    sql = _PG_FUNC.sub(lambda m: f"{m.group(1)}(", sql)
    sql = _VERSION.sub(f"'PostgreSQL {SERVER_VERSION} (lakehouse-ingest serve, DuckDB dialect)'", sql)
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    return sql


class LakeConnection(Connection):
    def __init__(self, lake: Lake) -> None:
        super().__init__()
        self.lake = lake
        self.datasets = _Datasets(lake)
        self._lock = threading.Lock()

    def parameters(self) -> dict[str, str]:
        return {
            "server_version": SERVER_VERSION,
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "TimeZone": "UTC",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "default_transaction_read_only": "on",
        }

    def new_session(self) -> Session:
        return LakeSession(self.lake, self.datasets)

    def open_session(self, params: dict[str, str]) -> LakeSession:
        """A session for a client's start-up parameters (``options=-c lakehouse.as_of=...``)."""
        session = LakeSession(self.lake, self.datasets, as_of=_startup_as_of(params.get("options", "")))
        with self._lock:
            self._sessions[session.id] = session
        return session

    def close_session(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)
        session.close()


def _startup_as_of(options: str) -> str | None:
    m = re.search(r"(?:-c\s*|--)lakehouse\.as_of=(\S+)", options)
    return m.group(1) if m else None


class _AnyUser(dict):
    """buenavista looks the password up by user name: every name has the one password."""

    def __init__(self, password: str) -> None:
        super().__init__()
        self._password = password

    def __missing__(self, user: str) -> str:
        return self._password


_SSL_REQUEST, _GSSENC_REQUEST, _CANCEL_REQUEST, _PROTOCOL_3 = 80877103, 80877104, 80877102, 196608
_SQLSTATE = (("password authentication failed", "28P01"), ("requires TLS", "28000"), ("refused", "25006"))


class _Context(bv.BVContext):
    def describe_statement(self, name: str) -> QueryResult:
        """The columns of a prepared statement, found by running it with NULL parameters
        (buenavista made up a value per type and refused the types it did not know, e.g. varchar)."""
        sql, oids = self.stmts[name]
        count = max([len(oids), *(int(n) for n in re.findall(r"\$(\d+)", sql))])
        return self.execute_sql(sql, [None] * count if count else None)


class _Handler(bv.BuenaVistaHandler):
    """buenavista's handler plus TLS, one password for any user, and errors with an SQLSTATE."""

    server: LakeServer
    r: bv.BVBuffer
    connection: Any
    rfile: Any
    wfile: Any

    def handle_startup(self, conn: Connection) -> bv.BVContext | None:
        length = self.r.read_uint32() - 4
        code = self.r.read_uint32()
        if code == _SSL_REQUEST:
            if self.server.tls is None:
                self.wfile.write(b"N")
            else:
                self.wfile.write(b"S")
                self._start_tls(self.server.tls)
            return self.handle_startup(conn)
        if code == _GSSENC_REQUEST:
            self.wfile.write(b"N")
            return self.handle_startup(conn)
        if code == _PROTOCOL_3:
            if self.server.tls is not None and not isinstance(self.connection, ssl.SSLSocket):
                self.send_error("this server requires TLS: connect with sslmode=require")
                return None
            msg = [x.decode("utf-8") for x in self.r.read_bytes(length - 4).split(bv.NULL_BYTE)]
            params = dict(zip(msg[::2], msg[1::2], strict=False))  # the list ends with empty names
            session = self.server.conn.open_session(params)
            ctx = _Context(session, None, params)
            self.send_auth_request(ctx)
            return ctx
        if code == _CANCEL_REQUEST:  # cancelling a running DuckDB query is not supported: ignore
            self.r.read_bytes(8)
            return None
        raise IngestError(f"unsupported start-up message {code}")

    def handle_bind(self, ctx: bv.BVContext, payload: bytes) -> None:
        """buenavista's Bind, except that a text parameter of unknown type stays a string (it
        parsed those as dates, so psycopg's ``%s`` with a str failed); DuckDB casts it."""
        buf = bv.BVBuffer(io.BytesIO(payload))
        portal, stmt = _cstring(buf), _cstring(buf)
        formats = [buf.read_int16() for _ in range(buf.read_int16())]
        count = buf.read_int16()
        formats = (formats * count if len(formats) == 1 else formats) or [0] * count
        oids = ctx.stmts[stmt][1]
        params: list[Any] = []
        for i in range(count):
            size = buf.read_int32()
            raw = None if size < 0 else buf.read_bytes(size)
            oid = oids[i] if i < len(oids) else 0
            if raw is None:
                params.append(None)
            elif formats[i] == 0:
                params.append(raw.decode("utf-8"))
            elif oid in bv.TYPE_OIDS and bv.TYPE_OIDS[oid][1]:
                params.append(struct.unpack(bv.TYPE_OIDS[oid][1], raw)[0])
            else:
                raise IngestError(f"binary parameters of type oid {oid} are not supported: send them as text")
        result_formats = [buf.read_int16() for _ in range(buf.read_int16())]
        ctx.add_portal(portal, stmt, params, result_formats)
        self.send_bind_complete()

    def _start_tls(self, context: ssl.SSLContext) -> None:
        self.connection = self.request = context.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        self.wfile = socketserver._SocketWriter(self.connection)  # type: ignore[attr-defined]  # private in typeshed, public in CPython since 3.6
        self.r = bv.BVBuffer(self.rfile)

    def handle_md5_password(self, ctx: bv.BVContext, payload: bytes) -> None:
        client_side = payload.decode("utf-8").rstrip("\x00")
        if hmac.compare_digest(client_side, ctx.get_hashed_password(self.server.auth)):
            self.send_authentication_ok()
            self.handle_post_auth(ctx)
            return
        user = ctx.params.get("user", "")
        log.warning("password authentication failed for user %r from %s", user, self.client_address[0])
        self.send_error(f'password authentication failed for user "{user}"')
        raise _Refused  # one try per connection

    def send_error(self, exception: Any, ctx: bv.BVContext | None = None) -> None:
        if isinstance(exception, _Refused):  # buenavista's handler reports what ended a connection
            return
        message = str(exception)
        code = next(
            (c for k, c in _SQLSTATE if k in message), "XX000" if not isinstance(exception, IngestError) else "42000"
        )
        fields = b"".join(
            t + v.encode() + b"\x00" for t, v in ((b"S", "ERROR"), (b"V", "ERROR"), (b"C", code), (b"M", message))
        )
        fields += b"\x00"
        self.wfile.write(struct.pack("!ci", bv.ServerResponse.ERROR_RESPONSE, len(fields) + 4) + fields)
        if ctx:
            ctx.mark_error()

    def handle(self) -> None:
        try:
            super().handle()
        except (_Refused, ConnectionError, ssl.SSLError, OSError):
            pass


def _cstring(buf: bv.BVBuffer) -> str:
    out = bytearray()
    while (b := buf.read_byte()) not in (b"", bv.NULL_BYTE):
        out += b
    return out.decode("utf-8")


class _Refused(Exception):
    """Ends a connection whose password was wrong."""


class LakeServer(bv.BuenaVistaServer):
    daemon_threads = True
    conn: LakeConnection

    def __init__(self, config: ServeConfig, lake: Lake, tls: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        super().__init__(
            (config.host, config.port),
            LakeConnection(lake),
            auth=_AnyUser(config.password) if config.password else None,
        )
        self.tls = tls
        self.handler = _Handler
        self.RequestHandlerClass = _Handler

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # buenavista only admits 127.0.0.1; here the bind address and the password decide
        return True


def serve(lake: Lake, config: ServeConfig) -> None:
    """Listen until interrupted (Ctrl-C or SIGTERM)."""
    tls = check_config(config)
    logging.getLogger("buenavista").setLevel(logging.CRITICAL)  # it logs every statement and traceback
    try:
        server = LakeServer(config, lake, tls)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    host, port = server.server_address[:2]
    if tls is None and not is_loopback(config.host):
        print(f"warning: serving on {config.host} without TLS: give --tls-cert/--tls-key", file=sys.stderr, flush=True)
    print(
        f"serving lake {lake.uri} on postgresql://{host}:{port} "
        f"(password {'required' if config.password else 'not required'}, TLS {'on' if tls else 'off'}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
