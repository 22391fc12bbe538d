"""Where a repository's files live: a local folder, or any fsspec URL (``s3://``, ``gs://``,
``file://``) with each version copied to a local cache before it loads.

The contract (``ArtifactStorage``): list model folders, read a model's ``model.yaml``, list a
model's version folders with a fingerprint that changes whenever any file in them changes,
and ``materialize`` a version into a local folder the runtimes can open. Listing may raise
``OSError`` when the storage is unreachable; callers keep serving and retry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ferry._extras import require_url

log = logging.getLogger("ferry.repository")


def _digest(items: Sequence[tuple[str, ...]]) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    for item in sorted(items):
        h.update("\0".join(item).encode() + b"\n")
    return h.hexdigest()


class ArtifactStorage(ABC):
    """A model repository's storage."""

    uri: str

    @abstractmethod
    def list_models(self) -> list[str]:
        """Names of model folders (hidden and ``_``-prefixed names excluded)."""

    def read_model_text(self, model: str, path: str) -> str | None:
        """The UTF-8 text of ``<model>/<path>`` (``model.yaml``, ``config.pbtxt``), or None
        when absent."""
        data = self.read_model_file(model, path)
        return None if data is None else data.decode()

    def read_manifest(self, model: str) -> str | None:
        """The text of ``<model>/model.yaml``, or None when absent."""
        return self.read_model_text(model, "model.yaml")

    @abstractmethod
    def read_model_file(self, model: str, path: str) -> bytes | None:
        """The bytes of ``<model>/<path>`` (a file beside ``model.yaml``, e.g. a labels
        file), or None when absent."""

    @abstractmethod
    def list_versions(self, model: str) -> dict[str, str]:
        """Folder name -> fingerprint for each folder inside the model folder."""

    @abstractmethod
    def materialize(self, model: str, version: str) -> Path:
        """A local folder holding the version's files (the original for local storage)."""

    def release(self, model: str, version: str, path: Path) -> None:
        """Drop a materialized copy that is no longer used (no-op for local storage)."""

    def local_path(self, model: str, version: str) -> Path:
        """Where ``materialize`` puts (or finds) the version, before it is called."""
        return self.materialize(model, version)


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


class LocalStorage(ArtifactStorage):
    """A folder on this machine; versions are used in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def list_models(self) -> list[str]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} is not a folder")
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _visible(p.name))

    def read_model_file(self, model: str, path: str) -> bytes | None:
        file = self.root / model / path
        return file.read_bytes() if file.is_file() else None

    def list_versions(self, model: str) -> dict[str, str]:
        folder = self.root / model
        versions = {}
        for child in sorted(folder.iterdir()) if folder.is_dir() else []:
            if child.is_dir() and _visible(child.name):
                files = []
                for f in child.rglob("*"):
                    if f.is_file() and "__pycache__" not in f.parts:
                        st = f.stat()
                        files.append((f.relative_to(child).as_posix(), str(st.st_size),
                                      str(st.st_mtime_ns)))
                versions[child.name] = _digest(files)
        return versions

    def materialize(self, model: str, version: str) -> Path:
        return self.root / model / version


class FsspecStorage(ArtifactStorage):
    """Any fsspec filesystem; versions are copied to ``cache_dir`` before loading."""

    def __init__(self, uri: str, cache_dir: Path, options: dict[str, Any] | None = None) -> None:
        import fsspec

        require_url(uri, "the repository")  # s3:// without s3fs: name the extra
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **(options or {}))
        self.root = self.root.rstrip("/")
        self.cache_dir = cache_dir
        self._fingerprints: dict[tuple[str, str], str] = {}

    def _ls_dirs(self, path: str) -> list[str]:
        self.fs.invalidate_cache(path)
        entries = self.fs.ls(path, detail=True)
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries
                      if e.get("type") == "directory")

    def list_models(self) -> list[str]:
        return [n for n in self._ls_dirs(self.root) if _visible(n)]

    def read_model_file(self, model: str, path: str) -> bytes | None:
        try:
            with self.fs.open(f"{self.root}/{model}/{path}", "rb") as fh:
                return fh.read()  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def list_versions(self, model: str) -> dict[str, str]:
        base = f"{self.root}/{model}"
        self.fs.invalidate_cache(base)
        found = self.fs.find(base, detail=True)
        groups: dict[str, list[tuple[str, ...]]] = {}
        for name, info in found.items():
            rel = name[len(base):].lstrip("/")
            if "/" not in rel:
                continue  # model.yaml and other files beside the version folders
            version, inner = rel.split("/", 1)
            tag = str(info.get("ETag") or info.get("etag") or info.get("mtime") or "")
            groups.setdefault(version, []).append((inner, str(info.get("size", "")), tag))
        versions = {v: _digest(files) for v, files in groups.items() if _visible(v)}
        for v, fp in versions.items():
            self._fingerprints[(model, v)] = fp
        return versions

    def local_path(self, model: str, version: str) -> Path:
        fp = self._fingerprints.get((model, version), "unknown")
        return self.cache_dir / model / f"{version}-{fp[:16]}"

    def materialize(self, model: str, version: str) -> Path:
        target = self.local_path(model, version)
        if (target / ".complete").exists():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.fs.get(f"{self.root}/{model}/{version}/", str(partial), recursive=True)
        (partial / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
        return target

    def release(self, model: str, version: str, path: Path) -> None:
        if self.cache_dir in path.parents:
            shutil.rmtree(path, ignore_errors=True)


def open_storage(uri: str | Path, cache_dir: Path | None = None,
                 options: dict[str, Any] | None = None) -> ArtifactStorage:
    """Local folder for plain paths and ``file://`` folders, fsspec for other URLs."""
    text = str(uri)
    if "://" not in text:
        return LocalStorage(Path(text))
    if text.startswith("file://"):
        return LocalStorage(Path(text[len("file://"):]))
    if cache_dir is None:
        cache_dir = Path(os.environ.get("FERRY_CACHE_DIR", Path.home() / ".cache" / "ferry"))
    options = dict(options or {})
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if text.startswith("s3://") and endpoint and "endpoint_url" not in options:
        options["endpoint_url"] = endpoint
    return FsspecStorage(text, cache_dir, options)
