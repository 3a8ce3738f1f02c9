"""Errors cross process boundaries as themselves: a Dask worker's exception is pickled back to
the flow, and one that cannot be rebuilt there surfaces as a TypeError about ``__init__``
instead of its own one-line message, exit code and retry verdict."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import ingest
import transforms
from ingest.errors import IngestError, SchemaConflict, is_transient
from transforms.dbt_runner import TransformFailed, TransformResult


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for pkg in (ingest, transforms):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            mod = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(mod, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == mod.__name__:
                    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


# the classes whose constructor is not (message): built from their own arguments
SPECIAL = {
    SchemaConflict: lambda: SchemaConflict("bronze.t", {"qty": ("int64", "string")}),
    TransformFailed: lambda: TransformFailed("dbt failed: x", TransformResult(ok=False), transient=True),
}


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__qualname__)
def test_every_error_survives_pickling(cls: type[BaseException]) -> None:
    exc = SPECIAL[cls]() if cls in SPECIAL else cls("a message that says how to fix it")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == str(exc)
    assert is_transient(back) == is_transient(exc)
    if isinstance(exc, IngestError):
        assert back.exit_code == exc.exit_code


def test_pickled_errors_keep_their_details() -> None:
    conflict = pickle.loads(pickle.dumps(SPECIAL[SchemaConflict]()))
    assert conflict.columns == {"qty": ("int64", "string")} and conflict.table == "bronze.t"
    failed = pickle.loads(pickle.dumps(SPECIAL[TransformFailed]()))
    assert failed.transient and failed.exit_code == 4 and failed.result == TransformResult(ok=False)
