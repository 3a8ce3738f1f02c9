# syntax=docker/dockerfile:1
# The project image.  One image runs the Prefect worker, the one-shot jobs (bucket, source seed,
# deployments) and the Spark master and worker, so the Spark driver and its executors share one
# Python, one pyspark and one set of Delta/s3a jars - versions come from requirements.lock.
#
#   docker build -t lakehouse-ingest .        (docker compose builds it for you)

# bookworm: Debian's OpenJDK 17 (Spark 4 runs on Java 17 or 21).
FROM python:3.11-slim-bookworm

ARG UV_VERSION=0.13.9
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JAVA_HOME=/usr/lib/jvm/java-17 \
    LAKEHOUSE_HOME=/app \
    LAKEHOUSE_IVY_DIR=/opt/lakehouse/ivy \
    SPARK_NO_DAEMONIZE=1

# Debian's stable/security channel decides the exact JDK patch release (no version pin).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless procps tini \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" "$JAVA_HOME" \
 && rm -rf /var/lib/apt/lists/*

RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /app

# Dependencies first (cached until the lock changes), exactly as pinned.
COPY requirements.lock ./
RUN uv pip install --system --no-cache -r requirements.lock

# The project itself (.dockerignore keeps the venv, lakes and caches out).
COPY . /app
RUN uv pip install --system --no-cache --no-deps /app

# Resolve the Delta and hadoop-aws jars at build time so containers start without Maven Central,
# then hand /app, the jar cache and the sources volume to the unprivileged user.
RUN python infra/docker/warm_spark_jars.py \
 && groupadd --gid 10001 lakehouse \
 && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin lakehouse \
 && mkdir -p /data/sources \
 && chown -R lakehouse:lakehouse /app /opt/lakehouse /data
USER 10001:10001

ENTRYPOINT ["tini", "--"]
CMD ["prefect", "worker", "start", "--pool", "lakehouse-process", "--type", "process"]
