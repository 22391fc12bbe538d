"""Working-folder paths in settings are made absolute once, at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.batch.records import BatchSettings
from ferry.settings import ServerSettings, absolute_sqlite_url, sqlite_file


@pytest.mark.parametrize(("url", "absolute", "file"), [
    ("sqlite:///ferry.db", "sqlite:///{cwd}/ferry.db", "{cwd}/ferry.db"),
    ("sqlite:///data/x.db?mode=ro", "sqlite:///{cwd}/data/x.db?mode=ro", "{cwd}/data/x.db"),
    ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///{cwd}/x.db", "{cwd}/x.db"),
    ("sqlite:////srv/ferry.db", "sqlite:////srv/ferry.db", "/srv/ferry.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:", None),
    ("sqlite://", "sqlite://", None),
    ("postgresql://u:p@db/ferry", "postgresql://u:p@db/ferry", None),
    ("none", "none", None),
])
def test_sqlite_paths_are_made_absolute(url: str, absolute: str, file: str | None,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite_url(url) == absolute.format(cwd=tmp_path)
    assert sqlite_file(url) == (None if file is None else Path(file.format(cwd=tmp_path)))


def test_server_settings_resolve_against_the_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FERRY_STORE", "FERRY_BATCH_STORE", "FERRY_STORE_SPILL_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = ServerSettings(store_spill_dir=Path("spill"), cache_dir=Path("cache"),
                              predictions_url="sqlite:///preds.db")
    assert settings.store == f"sqlite:///{tmp_path / 'ferry.db'}"
    assert settings.schedules_store() == settings.store
    assert settings.store_spill_dir == tmp_path / "spill"
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.predictions_url == f"sqlite:///{tmp_path / 'preds.db'}"


@pytest.mark.parametrize(("env", "store"), [
    ({}, "sqlite:///{cwd}/ferry.db"),
    ({"FERRY_STORE": "sqlite:///served.db"}, "sqlite:///{cwd}/served.db"),
    ({"FERRY_STORE": "none"}, "sqlite:///{cwd}/ferry.db"),
    ({"FERRY_STORE": "postgresql://db/a", "FERRY_BATCH_STORE": "sqlite:///runs.db"},
     "sqlite:///{cwd}/runs.db"),
])
def test_the_run_record_store_follows_the_servers_rule(
        env: dict[str, str], store: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FERRY_STORE", "FERRY_BATCH_STORE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert BatchSettings().store == store.format(cwd=tmp_path)
