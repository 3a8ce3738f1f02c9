"""Resolve the Spark jars (delta-spark, hadoop-aws) into LAKEHOUSE_IVY_DIR while the image builds.

Uses the project's own session builder, so the image caches exactly the packages the Prefect
worker's Spark driver will ask for - no version is written down twice.
"""

from __future__ import annotations

import sys

from ingest.lake import Lake
from ingest.settings import S3Settings
from transforms.spark.session import build_spark, ivy_dir


def main() -> int:
    lake = Lake("s3://warm-up/lake", s3=S3Settings(region="us-east-1"))
    spark = build_spark(lake, app_name="warm-spark-jars", master="local[1]", s3a=True)
    try:
        jars = spark.sparkContext.getConf().get("spark.jars", "")
    finally:
        spark.stop()
    print(f"cached Spark jars in {ivy_dir()}: {jars}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
