"""The compose stack's bucket job: create the bucket named in LAKEHOUSE_LAKE, with versioning.

It reads the same settings as the worker (``load_settings``) and reaches S3 through
``Lake.boto3_client``, so the bucket it creates is by construction the one the lake uses.
Idempotent; waits for the endpoint, since MinIO may still be starting.
"""

from __future__ import annotations

import json
import sys
import time

from ingest.errors import ConfigError, IngestError
from ingest.lake import Lake
from ingest.settings import load_settings


def ensure_bucket(lake: Lake, *, versioning: bool = True, wait_seconds: float = 60.0) -> dict:
    """Create the lake's bucket if missing and turn versioning on (as the cloud bucket in infra/terraform)."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    if not lake.is_s3:
        raise ConfigError(f"lake {lake.uri} is not on S3: set LAKEHOUSE_LAKE=s3://bucket/prefix")
    if wait_seconds < 0:
        raise ValueError(f"wait_seconds must be >= 0, got {wait_seconds}")
    bucket = lake.location.bucket
    client = lake.boto3_client()
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            break
        except (EndpointConnectionError, ConnectionError) as exc:
            if time.monotonic() >= deadline:
                raise IngestError(lake.describe_error(exc, f"cannot reach S3 to create bucket {bucket!r}")) from None
            time.sleep(1.0)
        except ClientError as exc:
            raise IngestError(lake.describe_error(exc, f"cannot list buckets to create {bucket!r}")) from None
    created = bucket not in existing
    try:
        if created:
            client.create_bucket(Bucket=bucket)
        if versioning:
            client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        status = client.get_bucket_versioning(Bucket=bucket).get("Status", "Disabled")
    except ClientError as exc:
        raise IngestError(lake.describe_error(exc, f"cannot set up bucket {bucket!r}")) from None
    return {"bucket": bucket, "created": created, "versioning": status, "lake": lake.uri}


def main() -> int:
    try:
        lake = Lake.from_settings(load_settings())
        print(json.dumps(ensure_bucket(lake)))
    except (IngestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
