"""AWS access without boto3 at start-up: the standard AWS variables, object URLs, a local SigV4 presigner.

``ingest sync`` starts on every training job and presigns one GET per shard; importing boto3 alone
takes longer than a whole no-op re-sync, so the presigner here signs with ``hmac`` (botocore is
imported only when credentials must come from its chain: profile, instance role).  ``s3_client``
is the one place a boto3 S3 client is built.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from datetime import datetime

    from ingest.lake import Lake
    from ingest.settings import S3Settings

__all__ = [
    "CONFIG_FILE_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "AwsEnv",
    "EnvSecret",
    "presign_get",
    "redact",
    "s3_client",
    "s3_object_url",
    "settings_in_play",
]


# Where settings come from (read by ingest/settings.py); here so code that must start fast can
# tell whether any are in play without importing pydantic-settings.
ENV_PREFIX = "LAKEHOUSE_"
CONFIG_FILE_ENV = "LAKEHOUSE_CONFIG"
DEFAULT_CONFIG_FILE = "lakehouse.yaml"


def settings_in_play(environ: dict[str, str] | None = None) -> bool:
    """Whether a settings file or a ``LAKEHOUSE_*`` variable exists.  If not, ``Settings`` would
    hold only defaults, and S3 access is exactly the standard AWS variables (:class:`AwsEnv`)."""
    env = os.environ if environ is None else environ
    if any(k.startswith(ENV_PREFIX) for k in env):
        return True
    return Path(DEFAULT_CONFIG_FILE).exists()


@dataclass(frozen=True)
class EnvSecret:
    """A secret read from the environment; the same accessor as pydantic's ``SecretStr``."""

    value: str = field(repr=False)

    def get_secret_value(self) -> str:
        return self.value


@dataclass(frozen=True)
class AwsEnv:
    """The standard AWS variables, read without pydantic.

    ``S3Settings.from_env`` validates exactly these values; ``ingest sync`` (which must start in
    well under 0.1 s) uses them directly when no settings are in play.  Same attributes as
    ``S3Settings``, so S3 helpers here accept either.
    """

    endpoint_url: str | None = None
    access_key_id: EnvSecret | None = None
    secret_access_key: EnvSecret | None = None
    session_token: EnvSecret | None = None
    region: str = "us-east-1"

    @staticmethod
    def values(environ: dict[str, str] | None = None) -> dict[str, str | None]:
        env = os.environ if environ is None else environ
        return {
            "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            "access_key_id": env.get("AWS_ACCESS_KEY_ID") or None,
            "secret_access_key": env.get("AWS_SECRET_ACCESS_KEY") or None,
            "session_token": env.get("AWS_SESSION_TOKEN") or None,
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        }

    @classmethod
    def read(cls, environ: dict[str, str] | None = None) -> AwsEnv:
        v = cls.values(environ)

        def secret(name: str) -> EnvSecret | None:
            value = v[name]
            return EnvSecret(value) if value else None

        return cls(
            endpoint_url=v["endpoint_url"],
            region=v["region"] or "us-east-1",
            access_key_id=secret("access_key_id"),
            secret_access_key=secret("secret_access_key"),
            session_token=secret("session_token"),
        )

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))


def s3_object_url(s3: S3Settings | AwsEnv, bucket: str, key: str) -> str:
    """The HTTP(S) URL of an object: path-style on a custom endpoint, virtual-hosted on AWS."""
    from urllib.parse import quote

    qkey = quote(key, safe="/~")
    if s3.endpoint_url:
        return f"{s3.endpoint_url.rstrip('/')}/{bucket}/{qkey}"
    if "." in bucket:
        return f"https://s3.{s3.region}.amazonaws.com/{bucket}/{qkey}"
    return f"https://{bucket}.s3.{s3.region}.amazonaws.com/{qkey}"


def presign_get(
    s3: S3Settings | AwsEnv, bucket: str, key: str, *, expires: int = 3600, now: datetime | None = None
) -> str:
    """A SigV4 presigned GET URL, signed locally without importing boto3 (fast start for `ingest sync`).

    Credentials: the settings' keys, else botocore's chain (profile, instance role), refreshed
    by botocore as they expire.  Never log the result: it carries a signature.
    """
    import hashlib
    import hmac
    from datetime import datetime
    from urllib.parse import quote, urlsplit

    if s3.access_key_id and s3.secret_access_key:
        ak = s3.access_key_id.get_secret_value()
        sk = s3.secret_access_key.get_secret_value()
        token = s3.session_token.get_secret_value() if s3.session_token else None
    else:
        import botocore.session

        creds = botocore.session.get_session().get_credentials()
        if creds is None:
            raise ConfigError(
                "no AWS credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or attach an instance role"
            )
        frozen = creds.get_frozen_credentials()
        ak, sk, token = frozen.access_key, frozen.secret_key, frozen.token
    url = urlsplit(s3_object_url(s3, bucket, key))
    host = url.netloc
    if (url.scheme, url.port) in (("http", 80), ("https", 443)):
        host = url.hostname or host  # clients omit a default port from the Host header
    t = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{t[:8]}/{s3.region}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{ak}/{scope}",
        "X-Amz-Date": t,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    if token:
        params["X-Amz-Security-Token"] = token
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    canonical = "\n".join(["GET", url.path, query, f"host:{host}", "", "host", "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", t, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = f"AWS4{sk}".encode()
    for part in (t[:8], s3.region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{url.scheme}://{host}{url.path}?{query}&X-Amz-Signature={sig}"


def s3_client(s3: S3Settings, **config: Any):
    """A boto3 S3 client from S3Settings alone (no lake URI needed, e.g. ``ingest sync s3://...``).

    Credentials come from the settings (the standard AWS_* variables) or, when absent, from
    boto3's chain (profile, instance role).  ``config`` goes to ``botocore.config.Config``.
    """
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {"region_name": s3.region}
    if s3.endpoint_url:
        kwargs["endpoint_url"] = s3.endpoint_url
    if s3.access_key_id and s3.secret_access_key:
        kwargs["aws_access_key_id"] = s3.access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = s3.secret_access_key.get_secret_value()
        if s3.session_token:
            kwargs["aws_session_token"] = s3.session_token.get_secret_value()
    config.setdefault("s3", {"addressing_style": "path"})
    config.setdefault("retries", {"max_attempts": 5, "mode": "adaptive"})
    return boto3.client("s3", config=Config(**config), **kwargs)


# scheme://user:PASSWORD@host: the password runs to the LAST "@" before the host, since people
# write raw "@" in passwords (postgresql://reader:p@ss@db/app) and a first-"@" rule leaks the rest.
_URL_PASSWORD_RE = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<password>\S*)@(?P<host>[^\s@/]+)")


def redact(text: str, lake: Lake | None = None, *, secrets: Iterable[str | None] = ()) -> str:
    """Remove secret values from a message: URL passwords, the S3 keys and any given ``secrets``.

    The one redaction helper: errors, ``--json``, the run log and Prefect results all go through it.
    """
    s3 = lake.s3 if lake else AwsEnv.read()
    # an access key id is an identifier (AKIA + 16): a toy one like "bench" would mangle output
    values: list[tuple[str | None, int]] = [(s, 4) for s in secrets]
    for secret, shortest in ((s3.secret_access_key, 4), (s3.session_token, 4), (s3.access_key_id, 12)):
        if secret is not None:
            values.append((secret.get_secret_value(), shortest))
    for value, shortest in sorted(values, key=lambda v: -len(v[0] or "")):  # longest first
        if value and len(value) >= shortest:
            text = text.replace(value, "***")
    return _URL_PASSWORD_RE.sub(lambda m: f"{m['head']}***@{m['host']}", text)
