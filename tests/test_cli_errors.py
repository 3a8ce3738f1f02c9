"""Every failure exits non-zero with one line on stderr, secrets never leak, a wrong target is an
error (not an empty lake), _meta is the project's own, and storage faults name what to check.

All CLI checks run `ingest` as a real process, as cron, Prefect or a person would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from ingest.errors import ConfigError, SourceError, TransientError, is_transient
from ingest.lake import Lake, classify_storage_error, ingest_target, redact

INGEST = str(Path(sys.executable).parent / "ingest")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAKEHOUSE_", "PREFECT_"))}
    env["LAKEHOUSE_CONFIG"] = os.devnull  # no settings file
    env.update(extra)
    return env


def _run(*argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([INGEST, *argv], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The process failed with exactly one `error:` line on stderr and no traceback."""
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- unexpected errors: non-zero, one line; --debug adds the traceback ----------------------------
_INJECT = textwrap.dedent(
    """
    import sys
    import ingest.cli.lake_cmds as lake_cmds
    import ingest.sync as sync

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire\\nsecond line")

    lake_cmds.table_summaries = boom
    sync.sync_shards = boom
    from ingest.cli import main
    main()
    """
)


@pytest.mark.parametrize("argv", [["ls"], ["sync", "s3://b/x", "dest"]])
def test_unexpected_exception_exits_nonzero_with_one_line(tmp_path: Path, argv: list[str]) -> None:
    """A bug or an error nobody expected (here injected into the command) used to print a
    traceback and exit 0 through the exit handler: cron and Prefect saw success."""
    (tmp_path / "lake").mkdir()
    script = tmp_path / "inject.py"
    script.write_text(_INJECT)
    cmd = [sys.executable, str(script), "--lake", str(tmp_path / "lake"), *argv]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    line = _one_error_line(proc)
    assert proc.returncode == 1
    assert "RuntimeError: disk on fire" in line and "--debug" in line

    debug = subprocess.run(
        [*cmd[:2], "--debug", *cmd[2:]], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line
    by_env = subprocess.run(
        cmd, cwd=tmp_path, env=_env(LAKEHOUSE_DEBUG="1"), capture_output=True, text=True, timeout=120
    )
    assert by_env.returncode == 1 and "Traceback" in by_env.stderr


def test_os_errors_exit_nonzero(tmp_path: Path) -> None:
    """Disk full and friends (an OSError from deep inside a write) end with exit 1, one line."""
    script = tmp_path / "full.py"
    script.write_text(
        textwrap.dedent(
            """
            import errno, os
            import ingest.sources.logs as logs

            def full(*a, **k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            logs.ingest_logs = full
            from ingest.cli import main
            main()
            """
        )
    )
    src = tmp_path / "a.jsonl"
    src.write_text('{"a": 1}\n')
    proc = subprocess.run(
        [sys.executable, str(script), "--lake", str(tmp_path / "lake"), "logs", str(src), "--table", "bronze.ev"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "No space left on device" in _one_error_line(proc)


def _random_events(path: Path, lines: int) -> None:
    """JSON lines that do not compress (a full disk must really fill up)."""
    path.write_text(
        "".join(json.dumps({"event_id": f"e{i}", "pad": os.urandom(96).hex()}) + "\n" for i in range(lines))
    )


def _in_mount_namespace(setup: str) -> list[str] | None:
    """A prefix that runs a command after ``setup`` (mount commands; "$0" is the mount point) in a
    private user+mount namespace, or None where such namespaces are not allowed."""
    import shutil

    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        return None
    return ["unshare", "-rm", "sh", "-c", f'{setup} && exec "$@"']


@pytest.mark.parametrize("fault", ["disk_full", "read_only"])
def test_a_full_or_read_only_lake_disk_is_one_line_and_exit_1(tmp_path: Path, fault: str) -> None:
    """A real full disk (a 1 MiB tmpfs) and a real read-only one (a read-only bind mount), under a
    real `ingest logs`: delta-rs reports the failure as text ("(os error 28)") and its worker
    threads print Rust panic lines on stderr; the user gets one line naming the fault, exit 1, and
    the native lines go to the log file."""
    mnt, logs = tmp_path / "disk", tmp_path / "logs"
    mnt.mkdir()
    src = tmp_path / "big.jsonl"
    _random_events(src, 20_000)  # ~4.5 MB
    if fault == "disk_full":
        prefix = _in_mount_namespace('mount -t tmpfs -o size=1m tmpfs "$0"')
        expected = "No space left on device"
    else:
        small = tmp_path / "a.jsonl"
        small.write_text('{"event_id": "e0"}\n')
        assert (
            _run("--lake", str(mnt / "lake"), "logs", str(small), "--table", "bronze.ev", cwd=tmp_path).returncode == 0
        )
        prefix = _in_mount_namespace('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"')
        expected = "Read-only file system"
    if prefix is None:
        pytest.skip("no unprivileged user+mount namespaces here")
    proc = subprocess.run(
        [*prefix, str(mnt), INGEST, "--lake", str(mnt / "lake"), "logs", str(src), "--table", "bronze.ev"],
        cwd=tmp_path,
        env=_env(LAKEHOUSE_LOG_DIR=str(logs)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = _one_error_line(proc)
    assert proc.returncode == 1
    assert line == f"error: cannot write bronze.ev: {expected} (lake {mnt / 'lake'})", line
    assert "panicked" not in proc.stderr


def test_native_stderr_goes_to_the_log_file_python_stderr_stays(tmp_path: Path) -> None:
    """What native code writes on fd 2 (here: a write straight to it, as Rust's panic hook does)
    lands in the log file; the one-line error still reaches the terminal; a command that wrote
    nothing there leaves no log file behind."""
    script = tmp_path / "native.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import ingest.cli.lake_cmds as lake_cmds

            def boom(*args, **kwargs):
                os.write(2, b"thread 'tokio-rt-worker' panicked at buffered.rs: Already shut down\\n")
                raise OSError(28, "No space left on device")

            lake_cmds.table_summaries = boom
            from ingest.cli import main
            main()
            """
        )
    )
    (tmp_path / "lake").mkdir()
    logs = tmp_path / "logs"
    env = _env(LAKEHOUSE_LOG_DIR=str(logs))
    proc = subprocess.run(
        [sys.executable, str(script), "--lake", str(tmp_path / "lake"), "ls"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "No space left on device" in _one_error_line(proc)
    (log,) = logs.glob("ingest-*.log")
    assert "panicked at buffered.rs" in log.read_text()
    log.unlink()
    assert _run("--lake", str(tmp_path / "lake"), "ls", cwd=tmp_path, env=env).returncode == 0
    assert list(logs.glob("ingest-*")) == []


# -- a wrong target is an error, not an empty lake ------------------------------------------------
def test_reading_a_missing_lake_or_a_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "lkae"
    for argv in (["ls"], ["sql", "select 1"], ["snapshot", "list"], ["history", "bronze.x"], ["vacuum", "--dry-run"]):
        line = _one_error_line(_run("--lake", str(missing), *argv, cwd=tmp_path))
        assert f"lake {missing} does not exist" in line
    assert not missing.exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file, not a directory" in _one_error_line(_run("--lake", str(a_file), "ls", cwd=tmp_path))
    assert "is a file" in _one_error_line(_run("--lake", str(a_file), "logs", str(a_file), cwd=tmp_path))


def test_config_file_must_exist_and_parse(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    for argv in (["ls"], ["sync", "s3://b/x", "dest"]):  # the typer app and sync's own start-up path
        line = _one_error_line(_run("--config", str(tmp_path / "nope.yaml"), "--lake", "lake", *argv, cwd=tmp_path))
        assert "nope.yaml does not exist" in line
    bad = tmp_path / "lakehouse.yaml"
    bad.write_text("lake: [\n")
    env = {k: v for k, v in _env().items() if k != "LAKEHOUSE_CONFIG"}  # the default ./lakehouse.yaml
    for argv in (["ls"], ["snapshot", "list"], ["sync", "s3://b/x", "dest"]):
        line = _one_error_line(_run(*argv, cwd=tmp_path, env=env))
        assert "cannot parse lakehouse.yaml (line 2" in line, line
    bad.write_text("- a\n- b\n")
    assert "must be a mapping" in _one_error_line(_run("ls", cwd=tmp_path, env=env))
    # a setting pydantic refuses: one line naming it, exit 2 (recognised by class, on both CLI paths)
    bad.write_text("lake: lake\nnot_a_setting: 1\n")
    for argv in (["ls"], ["sync", "s3://b/x", "dest"]):
        proc = _run(*argv, cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr
        assert _one_error_line(proc) == "error: bad configuration: not_a_setting: Extra inputs are not permitted"


# each command with the arguments it needs to get as far as reading its settings
_COMMAND_ARGS = {
    "ls": [],
    "sql": ["select 1"],
    "history": ["bronze.x"],
    "run": [],
    "images": ["./x"],
    "logs": ["./x"],
    "tables": ["sqlite:///x.db", "--source-table", "t", "--table", "bronze.t"],
    "health": [],
    "lineage": ["gold.x"],
    "snapshot": ["list"],
    "vacuum": ["--dry-run"],
    "optimize": [],
    "shards": ["build", "ds", "--table", "gold.x", "--snapshot", "s"],
    "sync": ["s3://b/x", "dest"],
    "transform": [],
    "catalog": ["export", "c.duckdb"],
    "serve": [],
    "docs": ["--out", "site"],
}


@pytest.mark.parametrize("command", sorted(_COMMAND_ARGS))
def test_a_malformed_settings_file_fails_every_command(tmp_path: Path, command: str) -> None:
    """ "A malformed lakehouse.yaml (on every command)" printed a traceback and exited 0."""
    from ingest.cli import COMMANDS

    assert set(_COMMAND_ARGS) == set(COMMANDS), "a new command: add its arguments above"
    (tmp_path / "lakehouse.yaml").write_text("lake: [\n")
    (tmp_path / "lake").mkdir()
    env = {k: v for k, v in _env().items() if k != "LAKEHOUSE_CONFIG"}  # the default ./lakehouse.yaml
    proc = _run(command, *_COMMAND_ARGS[command], cwd=tmp_path, env=env)
    assert "cannot parse lakehouse.yaml (line 2" in _one_error_line(proc)
    assert proc.returncode == ConfigError.exit_code


def test_failed_write_leaves_no_new_lake_but_a_good_one_creates_it(tmp_path: Path) -> None:
    lake = tmp_path / "new-lake"
    _one_error_line(_run("--lake", str(lake), "images", str(tmp_path / "no-such-dir"), cwd=tmp_path))
    assert not lake.exists()
    src = tmp_path / "a.jsonl"
    src.write_text('{"a": 1}\n')
    proc = _run("--lake", str(lake), "--json", "logs", str(src), "--table", "bronze.ev", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (lake / "bronze" / "ev" / "_delta_log").is_dir()


def test_rows_a_check_constraint_refuses_are_one_line_naming_the_rule(tmp_path: Path) -> None:
    """delta-rs refuses such a batch with a multi-line preview of its rows (image bytes included);
    the CLI names the rule in one line, exits 2 (a retry fails the same way), commits nothing,
    and loads the batch once the rule allows it."""
    from PIL import Image

    from ingest.errors import ConstraintViolation

    src, lake = tmp_path / "imgs", tmp_path / "lake"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (24 + i, 24), (i, 0, 0)).save(src / f"{i}.png")
    assert _run("--lake", str(lake), "images", str(src), cwd=tmp_path).returncode == 0
    Lake(str(lake)).delta_table("bronze.images").alter.add_constraint({"narrow": "width < 30"})
    version = Lake(str(lake)).delta_table("bronze.images").version()
    Image.new("RGB", (40, 24)).save(src / "wide.png")
    proc = _run("--lake", str(lake), "images", str(src), cwd=tmp_path)
    line = _one_error_line(proc)
    assert proc.returncode == ConstraintViolation.exit_code == 2
    assert "bronze.images: 1 row(s) of this batch break the table's rules (narrow: width < 30)" in line, line
    assert Lake(str(lake)).delta_table("bronze.images").version() == version
    Lake(str(lake)).delta_table("bronze.images").alter.drop_constraint("narrow")
    ok = _run("--lake", str(lake), "--json", "images", str(src), cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout)["rows_written"] == 1, ok.stderr


def test_unknown_sqlalchemy_driver_is_one_line(tmp_path: Path) -> None:
    proc = _run(
        "--lake",
        str(tmp_path / "lake"),
        "tables",
        "postgresql+nodriver://u:pw@127.0.0.1/db",
        "--source-table",
        "t",
        "--table",
        "bronze.t",
        cwd=tmp_path,
    )
    assert "unknown SQLAlchemy driver 'postgresql+nodriver'" in _one_error_line(proc)
    assert proc.returncode == 2


# -- _meta belongs to the project -----------------------------------------------------------------
def test_meta_layer_is_reserved_for_the_project(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    src = tmp_path / "a.jsonl"
    src.write_text('{"a": 1}\n')
    assert _run("--lake", str(lake), "--json", "snapshot", "list", cwd=tmp_path).returncode != 0  # no lake yet
    assert _run("--lake", str(lake), "logs", str(src), "--table", "bronze.ev", cwd=tmp_path).returncode == 0
    for table in ("_meta.snapshots", "_meta.runs", "_meta.new"):
        line = _one_error_line(_run("--lake", str(lake), "logs", str(src), "--table", table, cwd=tmp_path))
        assert f"table {table} is reserved" in line
    assert not (lake / "_meta" / "snapshots").exists()
    ok = _run("--lake", str(lake), "--json", "snapshot", "list", cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout) == []
    with pytest.raises(ConfigError, match="reserved"):
        ingest_target("_meta.runs")
    assert str(ingest_target("bronze.x")) == "bronze.x"


def test_meta_layer_is_reserved_for_library_callers(tmp_path: Path) -> None:
    """The pipeline and the Prefect flows call the same functions: they refuse too."""
    from ingest.sources.images import ingest_images
    from ingest.sources.logs import ingest_logs
    from ingest.sources.tables import ingest_table

    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(ConfigError, match="reserved"):
        ingest_logs(lake, str(tmp_path), table="_meta.snapshots")
    with pytest.raises(ConfigError, match="reserved"):
        ingest_images(lake, str(tmp_path), table="_meta.runs")
    with pytest.raises(ConfigError, match="reserved"):
        ingest_table(lake, f"sqlite:///{tmp_path / 'x.db'}", source_table="t", table="_meta.t")
    assert not (tmp_path / "lake").exists()


# -- redaction ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("postgresql://reader:p@ss@host/db", "postgresql://reader:***@host/db"),
        (
            "cannot read postgresql+psycopg://reader:***@ss@host:5432/db#t: x",
            "cannot read postgresql+psycopg://reader:***@host:5432/db#t: x",
        ),
        (
            "mysql://u:a:b@c@h:3306/d?x=1 and http://host:9000/path",
            "mysql://u:***@h:3306/d?x=1 and http://host:9000/path",
        ),
        ("postgresql://reader@host/db", "postgresql://reader@host/db"),
    ],
)
def test_redact_hides_the_whole_url_password(text: str, expected: str) -> None:
    assert redact(text, Lake("/tmp/x")) == expected


def test_redact_given_secrets_longest_first() -> None:
    assert redact("pw p@ss@word is p@ss@word", Lake("/tmp/x"), secrets=["p@ss@word", "p@ss"]) == "pw *** is ***"


def test_parse_source_keeps_a_raw_at_in_the_password() -> None:
    from ingest.sources.tables import parse_source

    src = parse_source("postgresql://reader:p@ss@db.example:5432/app", "photos")
    assert src.url.password == "p@ss" and src.url.host == "db.example"
    assert "ss" not in src.label.replace("postgresql", "")


def _lake_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.integration
@pytest.mark.postgres
def test_password_with_raw_at_never_reaches_the_lake_or_stderr(postgres_url: str, tmp_path: Path) -> None:
    """A password with raw "@" signs in (host after the last "@"), and neither the password nor
    any part of it reaches the run log (parquet data and Delta statistics), the table's commit
    metadata or an error line."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_url)
    role, secret_tail = "r_" + uuid.uuid4().hex[:6], "tail" + uuid.uuid4().hex[:10]
    password = f"pw@{secret_tail}"
    conninfo = (
        f"host={admin.host} port={admin.port} user={admin.username} password={admin.password} dbname={admin.database}"
    )
    with psycopg.connect(conninfo, autocommit=True) as con:
        con.execute(f"create role {role} login password '{password}'")
        con.execute("create table if not exists redact_t (id int primary key, v text)")
        con.execute("insert into redact_t values (1, 'a') on conflict do nothing")
        con.execute(f"grant select on redact_t to {role}")
    lake = tmp_path / "lake"
    url = f"postgresql+psycopg://{role}:{password}@{admin.host}:{admin.port}/{admin.database}"
    ok = _run("--lake", str(lake), "tables", url, "--source-table", "redact_t", "--table", "bronze.r", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    wrong = url.replace(password, f"bad@{secret_tail}")
    failed = _run(
        "--lake", str(lake), "tables", wrong, "--source-table", "redact_t", "--table", "bronze.r", cwd=tmp_path
    )
    line = _one_error_line(failed)
    assert "check the user and password" in line
    assert secret_tail not in failed.stderr + failed.stdout + ok.stdout
    runs = lake / "_meta" / "runs"
    assert len(list(runs.rglob("*.parquet"))) >= 2  # the failed run is logged too
    data = _lake_bytes(lake)
    assert secret_tail.encode() not in data and password.encode() not in data
    assert b"***" in _lake_bytes(runs)


# -- storage and database faults: clear hints, transient when unreachable -------------------------
@pytest.mark.integration
@pytest.mark.s3
@pytest.mark.parametrize("fault", ["no_bucket", "denied", "unreachable"])
def test_s3_write_errors_name_the_fault(s3_server, tmp_path: Path, fault: str) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text('{"a": 1}\n')
    env = _env(**s3_server.env())
    lake = f"s3://{s3_server.make_bucket()}/lake"
    if fault == "no_bucket":
        lake = f"s3://nobucket-{uuid.uuid4().hex[:8]}/lake"
    elif fault == "denied":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-" + uuid.uuid4().hex
    else:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{_free_port()}"  # a stopped endpoint
    proc = _run("--lake", lake, "logs", str(src), "--table", "bronze.ev", cwd=tmp_path, env=env)
    line = _one_error_line(proc)
    assert line.startswith("error: cannot open bronze.ev: ") or line.startswith("error: cannot write bronze.ev: "), line
    hint = {
        "no_bucket": f"check that bucket '{lake[5:].split('/')[0]}' exists",
        "denied": "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        "unreachable": f"check AWS_ENDPOINT_URL ({env['AWS_ENDPOINT_URL']}) is reachable",
    }[fault]
    assert line.endswith(hint), line
    assert proc.returncode == (TransientError.exit_code if fault == "unreachable" else ConfigError.exit_code)
    assert env["AWS_SECRET_ACCESS_KEY"] not in proc.stderr
    # reading the same lake gives the same hint (one classifier)
    read = _one_error_line(_run("--lake", lake, "ls", cwd=tmp_path, env=env))
    assert read.endswith(hint), read


@pytest.mark.integration
@pytest.mark.s3
def test_stopped_s3_endpoint_is_transient_for_the_orchestrator(s3_server, tmp_path: Path) -> None:
    from ingest.settings import S3Settings
    from ingest.sources.logs import ingest_logs

    src = tmp_path / "a.jsonl"
    src.write_text('{"a": 1}\n')
    s3 = S3Settings.from_env({**s3_server.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"})
    lake = Lake(f"s3://{s3_server.make_bucket()}/lake", s3=s3)
    with pytest.raises(TransientError) as err:
        ingest_logs(lake, str(src), table="bronze.ev")
    assert is_transient(err.value)
    # a source bucket on the stopped endpoint: transient too, and names the source
    with pytest.raises(TransientError, match="cannot read source s3://src-bucket/x"):
        ingest_logs(Lake(str(tmp_path / "lake"), s3=s3), "s3://src-bucket/x", table="bronze.ev")


@pytest.mark.integration
@pytest.mark.postgres
def test_database_connection_failures_are_transient_bad_passwords_are_not(postgres_url: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    from ingest.sources.tables import ingest_table

    lake = Lake(str(tmp_path / "lake"))
    url = make_url(postgres_url)
    stopped = url.set(port=_free_port()).render_as_string(hide_password=False)  # nothing listens: a stopped server
    with pytest.raises(TransientError, match="check the host and port") as err:
        ingest_table(lake, stopped, source_table="t", table="bronze.t")
    assert is_transient(err.value)
    bad = url.set(password="wrong-password").render_as_string(hide_password=False)
    with pytest.raises(SourceError, match="check the user and password") as err2:
        ingest_table(lake, bad, source_table="t", table="bronze.t")
    assert not is_transient(err2.value)


@pytest.mark.parametrize("address", ["http://127.0.0.1:40355", "http://10.4.0.3:14030", "10.0.4.3:9403"])
def test_an_address_holding_403_is_not_access_denied(address: str) -> None:
    """A CI run once picked a free port starting 403: a refused connection read as a denied key."""
    text = (
        f"Generic S3 error\n  \x1b[31m↳\x1b[0m Error performing GET {address}/bkt?list-type=2 in 6s, after 10 retries"
        "\n  ↳ error sending request\n  ↳ tcp connect error\n  ↳ Connection refused (os error 111)"
    )
    assert classify_storage_error(OSError(text)) == "unreachable"
    err = Lake("s3://bkt/lake").storage_error(OSError(text), "cannot open bronze.ev")
    assert isinstance(err, TransientError) and "AWS_ENDPOINT_URL" in str(err)


def test_one_classifier_for_reads_and_writes() -> None:
    assert classify_storage_error(OSError("Generic S3 error\n<Error><Code>NoSuchBucket</Code></Error>")) == "no_bucket"
    assert classify_storage_error(OSError("SignatureDoesNotMatch")) == "denied"
    assert classify_storage_error(OSError("error sending request: Connection refused (os error 111)")) == "unreachable"
    assert classify_storage_error(OSError("No space left on device")) is None
    assert classify_storage_error(OSError("Client error with status 403: <Code>AccessDenied</Code>")) == "denied"
    assert classify_storage_error("HTTP response code: 403") == "denied"
    lake = Lake("s3://bkt/lake")
    err = lake.storage_error(
        OSError("Generic S3 error\n  ↳ Connection refused (os error 111)"), "cannot write bronze.x"
    )
    assert isinstance(err, TransientError) and is_transient(err)
    assert isinstance(lake.storage_error(OSError("AccessDenied"), "x"), ConfigError)


def test_write_failures_from_storage_are_typed_commit_races_are_not() -> None:
    from deltalake.exceptions import CommitFailedError

    from ingest.delta import storage_failure
    from ingest.lake import TableId

    lake, tid = Lake("s3://bkt/lake"), TableId("bronze", "x")
    err = storage_failure(
        lake, OSError("Generic S3 error\n<Error><Code>AccessDenied</Code><Message>no</Message></Error>"), tid
    )
    assert isinstance(err, ConfigError) and str(err) == (
        "cannot write bronze.x: Generic S3 error: AccessDenied: no - check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    )
    race = CommitFailedError("version 3 already exists")
    assert storage_failure(lake, race, tid) is race


def test_a_full_local_disk_is_typed_though_delta_rs_says_it_in_text(tmp_path: Path) -> None:
    from deltalake.exceptions import DeltaError

    from ingest.delta import storage_failure
    from ingest.errors import StorageError
    from ingest.lake import TableId

    lake, tid = Lake(str(tmp_path / "lake")), TableId("bronze", "x")
    full = DeltaError(
        "Failed to parse parquet: External: Generic LocalFileSystem error: Unable to copy data to file: No space left on device (os error 28)"
    )
    err = storage_failure(lake, full, tid)
    assert isinstance(err, StorageError) and err.exit_code == 1
    assert str(err) == f"cannot write bronze.x: No space left on device (lake {lake.uri})"
    assert isinstance(storage_failure(lake, OSError(30, "Read-only file system"), tid), StorageError)
    other = DeltaError("Schema error: cannot merge types")
    assert storage_failure(lake, other, tid) is other


# -- noise: the terminal shows the project's output; the JVM's and Prefect's go to a log file -----
@pytest.mark.integration
@pytest.mark.postgres
@pytest.mark.prefect
def test_ingest_run_with_a_bad_db_password_prints_one_line(postgres_url: str, tmp_path: Path) -> None:
    """Used to be 251 lines of stderr with three tracebacks (Prefect's task and flow logs)."""
    from sqlalchemy.engine import make_url

    bad = make_url(postgres_url).set(password="wrong-" + uuid.uuid4().hex[:8])
    config = tmp_path / "lakehouse.yaml"
    config.write_text(
        json.dumps(
            {
                "lake": str(tmp_path / "lake"),
                "sources": [
                    {
                        "kind": "tables",
                        "url": bad.render_as_string(hide_password=False),
                        "source_table": "photos",
                        "table": "bronze.photos",
                    }
                ],
            }
        )
    )
    logs = tmp_path / "logs"
    env = _env(LAKEHOUSE_CONFIG=str(config), LAKEHOUSE_LOG_DIR=str(logs), PREFECT_HOME=str(tmp_path / "prefect"))
    proc = _run("run", "--no-sync", cwd=tmp_path, env=env, timeout=600)
    line = _one_error_line(proc)
    assert "check the user and password" in line and bad.password not in proc.stderr + proc.stdout
    assert proc.returncode == SourceError.exit_code
    log = next(logs.glob("ingest-*.log"))
    assert "Starting temporary server" in log.read_text()  # Prefect's own lines went to the file
    assert f"Prefect and Spark logs: {log}" in proc.stdout


@pytest.mark.integration
@pytest.mark.spark
def test_spark_start_sends_ivy_and_jvm_output_to_the_log_file(tmp_path: Path) -> None:
    """`ingest transform` / `ingest run` start Spark through build_spark: its JVM used to print
    ~100 lines of Ivy resolution and WARN lines into the terminal (and into --json output)."""
    logs = tmp_path / "logs"
    script = textwrap.dedent(
        f"""
        from ingest.lake import Lake
        from transforms.spark.session import build_spark

        spark = build_spark(Lake({str(tmp_path / "lake")!r}))
        print(spark.range(5).selectExpr("sum(id)").collect()[0][0])
        spark.stop()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_env(LAKEHOUSE_LOG_DIR=str(logs)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "10"
    for noise in (":: resolving dependencies", "Ivy", "WARN", "log4j", "incubator"):
        assert noise not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    text = next(logs.glob("ingest-*.log")).read_text()
    assert "log4j" in text or "Ivy" in text


@pytest.mark.integration
@pytest.mark.s3
def test_reading_an_s3_lake_that_does_not_exist_is_an_error(s3_server, tmp_path: Path) -> None:
    env = _env(**s3_server.env())
    bucket = s3_server.make_bucket()
    for lake in (f"s3://{bucket}/no-lake-here", f"s3://nobucket-{uuid.uuid4().hex[:8]}/x"):
        line = _one_error_line(_run("--lake", lake, "ls", cwd=tmp_path, env=env))
        assert "does not exist" in line or "check that bucket" in line, line
    src = tmp_path / "a.jsonl"
    src.write_text('{"a": 1}\n')
    assert (
        _run(
            "--lake", f"s3://{bucket}/new-lake", "logs", str(src), "--table", "bronze.ev", cwd=tmp_path, env=env
        ).returncode
        == 0
    )
    ok = _run("--lake", f"s3://{bucket}/new-lake", "--json", "ls", cwd=tmp_path, env=env)
    assert ok.returncode == 0 and [t["table"] for t in json.loads(ok.stdout)] == [
        "bronze.ev",
        "bronze.ev_quarantine",
        "_meta.log_streams",
        "_meta.runs",
    ]


def test_is_transient_matches_library_errors_by_class() -> None:
    import botocore.exceptions
    import sqlalchemy.exc
    from deltalake.exceptions import CommitFailedError, DeltaError

    assert is_transient(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"))
    assert is_transient(CommitFailedError("version 3 already exists"))
    assert is_transient(sqlalchemy.exc.OperationalError("select 1", {}, Exception("server closed the connection")))
    assert not is_transient(DeltaError("schema mismatch"))
    assert not is_transient(SourceError("cannot read x: password authentication failed"))

    class CommitFailedErrorLookalike(Exception):  # a name alone no longer counts
        pass

    assert not is_transient(CommitFailedErrorLookalike())
