"""Repository layout: model folders, integer version folders, manifests and digests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.manifest import ModelManifest
from ferry.repository.layout import ModelEntry, scan_model, scan_repository, sha256_of


def make(root: Path, *paths: str) -> None:
    for p in paths:
        target = root / p
        if p.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"content of {p}")


def test_models_and_integer_versions(tmp_path: Path) -> None:
    make(tmp_path, "iris/1/model.onnx", "iris/2/model.onnx", "iris/10/model.onnx",
         "tabular/3/model.txt")
    (tmp_path / "iris" / "model.yaml").write_text("max_batch_size: 8\n")
    models = scan_repository(tmp_path)
    assert sorted(models) == ["iris", "tabular"]
    iris = models["iris"]
    assert isinstance(iris, ModelEntry)
    assert iris.name == "iris" and iris.path == tmp_path / "iris"
    assert iris.versions == {1: tmp_path / "iris" / "1", 2: tmp_path / "iris" / "2",
                             10: tmp_path / "iris" / "10"}
    assert all(isinstance(v, int) for v in iris.versions)
    assert iris.manifest is not None and iris.manifest.max_batch_size == 8
    assert iris.error is None and iris.skipped == []
    # no model.yaml: the defaults
    assert models["tabular"].manifest == ModelManifest()
    assert models["tabular"].versions == {3: tmp_path / "tabular" / "3"}


def test_non_integer_folders_are_reported(tmp_path: Path) -> None:
    make(tmp_path, "m/1/", "m/latest/", "m/v2/", "m/1.5/", "m/-3/")
    entry = scan_repository(tmp_path)["m"]
    assert entry.versions == {1: tmp_path / "m" / "1"}
    assert entry.skipped == sorted(["latest", "v2", "1.5", "-3"])


def test_hidden_and_underscore_entries_are_ignored(tmp_path: Path) -> None:
    make(tmp_path, "m/1/", "m/.git/", "m/__pycache__/", "m/.2/", ".hidden/1/", "_private/1/")
    models = scan_repository(tmp_path)
    assert list(models) == ["m"]
    assert models["m"].versions == {1: tmp_path / "m" / "1"}
    assert models["m"].skipped == []


def test_files_are_not_models_or_versions(tmp_path: Path) -> None:
    make(tmp_path, "README.md", "m/README.md", "m/1/model.onnx", "m/2")  # "2" is a file
    models = scan_repository(tmp_path)
    assert list(models) == ["m"]
    assert models["m"].versions == {1: tmp_path / "m" / "1"}
    assert models["m"].skipped == []


def test_model_without_versions(tmp_path: Path) -> None:
    make(tmp_path, "empty/")
    entry = scan_repository(tmp_path)["empty"]
    assert entry.versions == {} and entry.manifest == ModelManifest() and entry.error is None


def test_leading_zeros_are_the_same_version(tmp_path: Path) -> None:
    make(tmp_path, "m/007/")
    assert scan_repository(tmp_path)["m"].versions == {7: tmp_path / "m" / "007"}


def test_bad_manifest_sets_error(tmp_path: Path) -> None:
    make(tmp_path, "bad/1/model.onnx", "good/1/model.onnx")
    (tmp_path / "bad" / "model.yaml").write_text("max_batch_size: 8\nmax_batchsize: 8\n")
    models = scan_repository(tmp_path)
    bad = models["bad"]
    assert bad.manifest is None
    assert bad.error is not None
    assert "'max_batchsize'" in bad.error and str(tmp_path / "bad" / "model.yaml") in bad.error
    assert bad.versions == {1: tmp_path / "bad" / "1"}  # versions are still listed
    assert models["good"].error is None and models["good"].manifest is not None


def test_invalid_yaml_manifest_sets_error(tmp_path: Path) -> None:
    make(tmp_path, "m/1/")
    (tmp_path / "m" / "model.yaml").write_text("inputs: [\n")
    entry = scan_model(tmp_path / "m")
    assert entry.manifest is None and entry.error is not None and "YAML" in entry.error


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        scan_repository(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError):
        scan_repository(tmp_path / "file")


def test_unicode_digit_folder_is_skipped(tmp_path: Path) -> None:
    make(tmp_path, "m/1/", "m/²/")
    entry = scan_repository(tmp_path)["m"]
    assert entry.versions == {1: tmp_path / "m" / "1"}
    assert entry.skipped == ["²"]


# -- sha256_of ---------------------------------------------------------------------------

def test_sha256_is_stable(tmp_path: Path) -> None:
    make(tmp_path, "v/model.onnx", "v/sub/extra.bin")
    first = sha256_of(tmp_path / "v")
    assert len(first) == 64 and int(first, 16) >= 0
    assert sha256_of(tmp_path / "v") == first
    # the same content elsewhere has the same digest (paths are relative)
    make(tmp_path, "w/model.onnx", "w/sub/extra.bin")
    (tmp_path / "w" / "model.onnx").write_text("content of v/model.onnx")
    (tmp_path / "w" / "sub" / "extra.bin").write_text("content of v/sub/extra.bin")
    assert sha256_of(tmp_path / "w") == first


def test_sha256_changes_with_content(tmp_path: Path) -> None:
    make(tmp_path, "v/model.onnx")
    before = sha256_of(tmp_path / "v")
    (tmp_path / "v" / "model.onnx").write_bytes(b"other bytes")
    assert sha256_of(tmp_path / "v") != before


def test_sha256_changes_with_names_and_new_files(tmp_path: Path) -> None:
    make(tmp_path, "v/a.bin")
    before = sha256_of(tmp_path / "v")
    (tmp_path / "v" / "a.bin").rename(tmp_path / "v" / "b.bin")
    renamed = sha256_of(tmp_path / "v")
    assert renamed != before
    (tmp_path / "v" / "c.bin").write_bytes(b"")
    assert sha256_of(tmp_path / "v") != renamed


def test_sha256_ignores_pycache(tmp_path: Path) -> None:
    make(tmp_path, "v/model.py")
    before = sha256_of(tmp_path / "v")
    make(tmp_path, "v/__pycache__/model.cpython-311.pyc")
    assert sha256_of(tmp_path / "v") == before


def test_sha256_of_empty_folder(tmp_path: Path) -> None:
    make(tmp_path, "v/")
    assert sha256_of(tmp_path / "v") == \
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
