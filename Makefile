# The two commands a new user needs:  make run   and   make test
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
TOOLS := .venv-tools
# uv lives outside the project venv: `uv pip sync` removes whatever the lock does not list
UV    := $(TOOLS)/bin/uv

STREAMING := .venv-streaming

.PHONY: run test install test-deps lock bench

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv==0.13.9

$(PY):
	python3 -m venv $(VENV)

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as in many CI images) nothing is cached and
# every `ingest` command recompiled dbt, pydantic and typer from source (0.3 s -> 0.18 s start-up).
# editable_mode=compat: a plain path entry; setuptools' default import finder cost 13 ms per start.
install: $(UV) $(PY)
	$(UV) pip sync -q --compile-bytecode --python $(PY) requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e . --config-settings editable_mode=compat
	$(PY) -m compileall -q ingest transforms flows

# System packages for the integration tests: PostgreSQL and MariaDB server binaries (the tests
# start their own servers in temp dirs on free loopback ports, never the packaged services) and
# logrotate (log rotation tests), headless chromium (screenshots of the docs site and health report).
test-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; fi
	@if ! command -v mariadb-install-db >/dev/null 2>&1 || ! [ -x /usr/sbin/mariadbd ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null; fi
	@if ! command -v logrotate >/dev/null && [ ! -x /usr/sbin/logrotate ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq logrotate >/dev/null; fi
	@if ! command -v chromium >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; fi

# The real mosaicml-streaming reader (it pulls torch) in a venv of its own, for the MDS shard tests.
$(STREAMING)/.installed: tests/readers/streaming.lock | $(UV) $(PY)
	$(UV) venv -q --allow-existing --python $(PY) $(STREAMING)
	$(UV) pip sync -q --compile-bytecode --python $(STREAMING)/bin/python tests/readers/streaming.lock
	touch $@

run: install
	$(VENV)/bin/ingest run

test: install test-deps $(STREAMING)/.installed
	LAKEHOUSE_STREAMING_PYTHON=$(CURDIR)/$(STREAMING)/bin/python $(PY) -m pytest -q

lock: $(UV)
	$(UV) pip compile -q pyproject.toml --extra test --python-version 3.11 -o requirements.lock
	$(UV) pip compile -q tests/readers/streaming.in --python-version 3.11 -o tests/readers/streaming.lock

bench: install
	$(PY) bench/run_all.py
