"""Local storage listing and fingerprints; fsspec storage over a real local filesystem."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ferry.repository.layout import scan_repository
from ferry.repository.storage import FsspecStorage, LocalStorage, open_storage


def make_repo(root: Path) -> Path:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.onnx").write_bytes(b"one")
    (root / "m" / "model.yaml").write_text("max_batch_size: 4\n")
    (root / ".hidden").mkdir()
    return root


def test_local_listing_and_fingerprint_changes(tmp_path):
    storage = LocalStorage(make_repo(tmp_path))
    assert storage.list_models() == ["m"]
    assert storage.read_manifest("m") == "max_batch_size: 4\n"
    before = storage.list_versions("m")["1"]
    assert storage.list_versions("m")["1"] == before
    time.sleep(0.01)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"two")
    os.utime(tmp_path / "m" / "1" / "model.onnx", ns=(time.time_ns(), time.time_ns()))
    assert storage.list_versions("m")["1"] != before


def test_manifest_change_changes_the_version_fingerprint(tmp_path):
    make_repo(tmp_path)
    before = scan_repository(tmp_path)["m"].fingerprints[1]
    (tmp_path / "m" / "model.yaml").write_text("max_batch_size: 8\n")
    assert scan_repository(tmp_path)["m"].fingerprints[1] != before


def test_open_storage_picks_by_scheme(tmp_path):
    assert isinstance(open_storage(tmp_path), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert isinstance(open_storage(f"memory://repo-{tmp_path.name}", tmp_path / "c"),
                      FsspecStorage)


def test_fsspec_storage_materializes_into_the_cache(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe(f"/r-{tmp_path.name}/m/1/model.onnx", b"weights")
    fs.pipe(f"/r-{tmp_path.name}/m/model.yaml", b"instances: 2\n")
    storage = FsspecStorage(f"memory:///r-{tmp_path.name}", tmp_path / "cache")
    assert storage.list_models() == ["m"]
    assert storage.read_manifest("m") == "instances: 2\n"
    entry = scan_repository(storage)["m"]
    assert entry.manifest is not None and entry.manifest.instances == 2
    local = storage.materialize("m", "1")
    assert (local / "model.onnx").read_bytes() == b"weights"
    assert local == entry.versions[1]
    storage.release("m", "1", local)
    assert not local.exists()


def test_files_beside_the_manifest_are_read_from_either_storage(tmp_path):
    import fsspec

    make_repo(tmp_path / "local")
    (tmp_path / "local" / "m" / "classes").mkdir()
    (tmp_path / "local" / "m" / "classes" / "labels.txt").write_bytes(b"cat\ndog\n")
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/l-{tmp_path.name}/m/1/model.onnx", b"weights")
    fs.pipe(f"/l-{tmp_path.name}/m/classes/labels.txt", b"cat\ndog\n")
    for storage in (LocalStorage(tmp_path / "local"),
                    FsspecStorage(f"memory:///l-{tmp_path.name}", tmp_path / "cache")):
        assert storage.read_model_file("m", "classes/labels.txt") == b"cat\ndog\n"
        assert storage.read_model_file("m", "missing.txt") is None
