"""Fixtures for the stack tests (helpers live in stackfiles.py)."""

from __future__ import annotations

import pytest
from stackfiles import Compose, load_compose


@pytest.fixture
def compose() -> Compose:
    """docker-compose.yml as `docker compose up` with no .env file would see it."""
    return load_compose()
