"""Settings precedence and secret hygiene (fast unit tests, no servers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.lake import Lake, redact
from ingest.settings import CONFIG_FILE_ENV, S3Settings, Settings, load_settings

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
ACCESS = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LAKEHOUSE_* / AWS_* from the developer's shell; cwd is an empty temp dir."""
    import os

    for var in list(os.environ):
        if var.startswith(("LAKEHOUSE_", "AWS_")):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_when_nothing_is_set(clean_env: Path) -> None:
    s = load_settings()
    assert s.lake == "./lake"
    assert s.spark_master == "local[2]"
    assert s.s3.endpoint_url is None and s.s3.secret_access_key is None


def test_yaml_beats_default(clean_env: Path) -> None:
    _write_yaml(clean_env / "lakehouse.yaml", "lake: ./from-yaml\nspark_master: spark://yaml:7077\n")
    s = load_settings()
    assert (s.lake, s.spark_master) == ("./from-yaml", "spark://yaml:7077")


def test_env_beats_yaml(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(clean_env / "lakehouse.yaml", "lake: ./from-yaml\nspark_master: spark://yaml:7077\n")
    monkeypatch.setenv("LAKEHOUSE_LAKE", "s3://env-bucket/lake")
    s = load_settings()
    assert s.lake == "s3://env-bucket/lake"
    assert s.spark_master == "spark://yaml:7077"  # untouched keys still come from the file


def test_cli_flag_beats_env_and_yaml(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(clean_env / "lakehouse.yaml", "lake: ./from-yaml\n")
    monkeypatch.setenv("LAKEHOUSE_LAKE", "./from-env")
    assert load_settings(lake="./from-cli").lake == "./from-cli"
    assert load_settings(lake=None).lake == "./from-env"  # None means "flag not given"


def test_config_file_env_selects_the_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = _write_yaml(clean_env / "elsewhere.yaml", "lake: ./elsewhere\nhealth:\n  max_age_hours: 2\n")
    monkeypatch.setenv(CONFIG_FILE_ENV, str(other))
    s = load_settings()
    assert s.lake == "./elsewhere"
    assert s.health.max_age_hours == 2


def test_nested_env_override(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(clean_env / "lakehouse.yaml", "shards:\n  format: mds\n  shard_size: 64MB\n")
    monkeypatch.setenv("LAKEHOUSE_SHARDS__FORMAT", "parquet")
    s = load_settings()
    assert s.shards.format == "parquet"


def test_aws_standard_variables_feed_s3_settings(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    s = load_settings()
    assert s.s3.endpoint_url == "http://127.0.0.1:8333"
    assert s.s3.allow_http
    assert s.s3.region == "eu-west-1"
    assert s.s3.secret_access_key is not None and s.s3.secret_access_key.get_secret_value() == SECRET
    # the S3-specific endpoint variable wins over the generic one (AWS SDK convention)
    assert S3Settings.from_env({"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://b"}).endpoint_url == "http://b"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("lake", "ftp://host/x", "unsupported scheme"),
        ("lake", "s3:///nobucket", "bucket name is missing"),
        ("spark_master", "localhost:7077", "not a Spark master URL"),
        ("shards", {"format": "zip"}, "shards.format"),
    ],
)
def test_bad_values_name_the_field_and_fix(clean_env: Path, field: str, value, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_settings(**{field: value})
    assert expected in str(info.value)


def test_unknown_key_in_yaml_is_rejected(clean_env: Path) -> None:
    _write_yaml(clean_env / "lakehouse.yaml", "lake: ./x\nlakee: ./typo\n")
    with pytest.raises(ValidationError, match="lakee"):
        load_settings()


def test_secrets_never_in_repr_json_or_errors(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN")
    s = load_settings(lake="s3://my-bucket/lake")
    rendered = [repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(mode="json")), repr(s.s3)]
    for text in rendered:
        assert SECRET not in text
        assert "FwoGZXIvYXdzEXAMPLETOKEN" not in text
    assert "**********" in s.model_dump_json()

    lake = Lake.from_settings(s)
    err = lake.describe_error(
        OSError(f"403 Forbidden: signature mismatch for {ACCESS}:{SECRET}\n  ↳ detail {SECRET}"), "cannot open bronze.images"
    )
    assert SECRET not in err and ACCESS not in err
    assert "\n" not in err
    assert err.endswith("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    assert redact(f"token={SECRET}") == "token=***"


def test_cli_error_output_is_redacted(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value echoed back by validation must not leak secrets set in the environment."""
    from ingest.cli import app
    from ingest.cli.common import run_cli

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("LAKEHOUSE_LAKE", f"ftp://{SECRET}/x")
    with pytest.raises(SystemExit) as info:
        run_cli(app, ["ls"])
    assert info.value.code != 0
    out = capsys.readouterr()
    assert SECRET not in out.err + out.out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unsupported scheme" in lines[0]


def test_sync_fast_path_reads_aws_variables_as_settings_would(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ingest sync` skips pydantic-settings when nothing else is configured: same S3 values."""
    from ingest.aws import AwsEnv, settings_in_play

    env = {"AWS_ENDPOINT_URL_S3": "http://b:1", "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_SESSION_TOKEN": "tok", "AWS_DEFAULT_REGION": "eu-west-1"}
    fast, full = AwsEnv.read(env), S3Settings.from_env(env)
    for name in ("endpoint_url", "region", "allow_http"):
        assert getattr(fast, name) == getattr(full, name)
    for name in ("access_key_id", "secret_access_key", "session_token"):
        assert getattr(fast, name).get_secret_value() == getattr(full, name).get_secret_value()
    assert SECRET not in repr(fast)
    assert AwsEnv.read({}) == AwsEnv() and AwsEnv().region == "us-east-1"
    assert not settings_in_play({"AWS_REGION": "x"})  # clean_env: no lakehouse.yaml in the cwd
    assert settings_in_play({"LAKEHOUSE_S3__REGION": "x"})
    (clean_env / "lakehouse.yaml").write_text("lake: ./elsewhere\n")
    assert settings_in_play({})


def test_cli_config_flag_reads_the_file(clean_env: Path) -> None:
    """`ingest --config FILE` (a real process): the lake and the health thresholds come from FILE,
    not from ./lakehouse.yaml nor from LAKEHOUSE_CONFIG; a missing FILE is a one-line usage error."""
    import os
    import subprocess
    import sys
    from datetime import datetime, timedelta, timezone

    import pyarrow as pa

    from ingest.delta import write_batch
    from ingest.runlog import Run, record

    exe = str(Path(sys.executable).parent / "ingest")
    lake = Lake(str(clean_env / "lake-from-flag"))
    res = write_batch(lake, "bronze.events", pa.table({"user_id": [1, 2]}))
    record(lake, Run(command="logs", source="file:///logs", target="bronze.events",
                     started_at=datetime.now(timezone.utc) - timedelta(days=10),
                     version_before=-1, version_after=res.version, rows_written=2, status="success"))
    flag = _write_yaml(clean_env / "flag.yaml", f"lake: {lake.uri}\nhealth:\n  max_age_hours: 1000\n")
    _write_yaml(clean_env / "lakehouse.yaml", "lake: ./lake-from-cwd-file\n")
    env_file = _write_yaml(clean_env / "env.yaml", "lake: ./lake-from-env-file\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "AWS_"))}

    def ingest(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, cwd=clean_env,
                              env={**env, **extra}, timeout=120)

    listed = ingest("--config", str(flag), "--json", "ls", LAKEHOUSE_CONFIG=str(env_file))
    assert listed.returncode == 0, listed.stderr
    assert [t["table"] for t in json.loads(listed.stdout)] == ["bronze.events", "_meta.runs"]
    healthy = ingest("--config", str(flag), "--json", "health")  # 240 h old, within the file's 1000 h
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    stale = ingest("--lake", lake.uri, "--json", "health")  # the default 36 h: a breach
    assert stale.returncode == 1, stale.stdout + stale.stderr
    missing = ingest("--config", str(clean_env / "nope.yaml"), "ls")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    assert "nope.yaml" in missing.stderr
