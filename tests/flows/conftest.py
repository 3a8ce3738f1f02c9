"""Prefect for the flow tests: the in-process test harness, or a real server process."""

from typing import Iterator

import pytest
from prefect_procs import PrefectServer, running_server


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (startup takes ~20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """One server for every deploy/worker test (startup ~15 s); SQLite in its PREFECT_HOME."""
    with running_server(tmp_path_factory.mktemp("prefect-server")) as server:
        yield server
