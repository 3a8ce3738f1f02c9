"""Fixtures for the stack tests (helpers live in stackfiles.py)."""

from __future__ import annotations

import pytest
from stackfiles import ROOT, Compose, load_compose


@pytest.fixture
def compose() -> Compose:
    """docker-compose.yml as `docker compose up` sees it with a .env made from .env.example."""
    return load_compose()


@pytest.fixture
def free_ports(request: pytest.FixtureRequest):
    """``free_ports(n)`` from the shared tests/conftest.py (one implementation for every test)."""
    shared = str(ROOT / "tests" / "conftest.py")
    for plugin in request.config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == shared:
            return plugin.free_ports
    raise RuntimeError(f"{shared} is not loaded: run the tests with pytest from the repository root")
