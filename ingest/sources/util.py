"""Small helpers of the ingesters: the clock and the batch-size knobs."""

from __future__ import annotations

import os
from datetime import UTC, datetime

__all__ = ["env_int", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def env_int(name: str, default: int) -> int:
    """Batch-size knobs (bounded memory), overridable for tests and tuning."""
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default
