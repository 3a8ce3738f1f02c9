"""The dbt runner's parsed-project cache: parse once per project version, never a stale one."""

from __future__ import annotations

from pathlib import Path

import pytest

import transforms.dbt_runner as runner


@pytest.fixture
def parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A fresh cache dir and in-process cache; records every `dbt parse` the runner starts."""
    from dbt.cli.main import dbtRunner

    monkeypatch.setenv(runner.PARSE_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(runner, "_MANIFESTS", {})
    seen: list[list[str]] = []
    real = dbtRunner.invoke

    def invoke(self, args, **kwargs):
        seen.append(list(args))
        return real(self, args, **kwargs)

    monkeypatch.setattr(dbtRunner, "invoke", invoke)
    return seen


def test_manifest_is_parsed_once_then_loaded(parses: list[list[str]], tmp_path: Path, monkeypatch) -> None:
    first = runner.parsed_manifest("a" * 64, tmp_path / "t1")
    assert [a[0] for a in parses] == ["parse"]
    assert "model.lakehouse.photo_features" in first.nodes

    again = runner.parsed_manifest("a" * 64, tmp_path / "t2")  # same process
    monkeypatch.setattr(runner, "_MANIFESTS", {})  # a new process: from the file
    loaded = runner.parsed_manifest("a" * 64, tmp_path / "t3")
    assert len(parses) == 1
    for m in (again, loaded):
        assert m is not first and set(m.nodes) == set(first.nodes)
        # sources and refs resolve on a loaded copy (dbt 1.11's own pickling shifts the lookups)
        source = m.resolve_source("bronze", "events", "lakehouse", "lakehouse")
        assert source is not None and source.unique_id == "source.lakehouse.bronze.events"
        node = m.ref_lookup.find("int_photos_deduplicated", None, None, m)
        assert node is not None and node.unique_id == "model.lakehouse.int_photos_deduplicated"


def test_a_changed_project_or_a_bad_cache_file_parses_again(parses: list[list[str]], tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    runner.parsed_manifest("a" * 64, tmp_path / "t1")
    old = next(cache.glob(f"{runner._manifest_prefix()}-*.pickle"))

    other_checkout = cache / "manifest-0123456789ab-1.11.0-py3.11-cafe.pickle"
    other_checkout.write_bytes(b"another checkout's")
    runner.parsed_manifest("b" * 64, tmp_path / "t2")  # the project changed
    assert len(parses) == 2
    assert not old.exists() and other_checkout.exists()
    assert len(list(cache.glob(f"{runner._manifest_prefix()}-*.pickle"))) == 1

    monkeypatch.setattr(runner, "_MANIFESTS", {})
    next(cache.glob(f"{runner._manifest_prefix()}-*.pickle")).write_bytes(b"not a pickle")
    m = runner.parsed_manifest("b" * 64, tmp_path / "t3")
    assert len(parses) == 3 and "model.lakehouse.daily_activity" in m.nodes


def test_an_unwritable_cache_only_costs_a_parse(parses: list[list[str]], tmp_path: Path, monkeypatch) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(runner.PARSE_CACHE_ENV, str(blocked / "cache"))  # a file where a dir should be
    runner.parsed_manifest("c" * 64, tmp_path / "t1")
    monkeypatch.setattr(runner, "_MANIFESTS", {})
    runner.parsed_manifest("c" * 64, tmp_path / "t2")
    assert len(parses) == 2


def test_fingerprint_covers_docs_blocks_but_not_the_readme(tmp_path: Path, monkeypatch) -> None:
    """It keys the manifest cache: every file dbt parses must change it."""
    import shutil

    project = tmp_path / "dbt_project"
    shutil.copytree(runner.PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    monkeypatch.setattr(runner, "PROJECT_DIR", project)
    base = runner.project_fingerprint()
    (project / "README.md").write_text("edited prose")
    assert runner.project_fingerprint() == base
    (project / "models" / "docs.md").write_text("{% docs photo %}A photo.{% enddocs %}")
    with_docs = runner.project_fingerprint()
    assert with_docs != base
    (project / "models" / "marts" / "daily_activity.sql").write_text("select 1 as activity_date")
    assert runner.project_fingerprint() not in (base, with_docs)
