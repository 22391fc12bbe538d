"""Parse ``<repo>/<model>/<version>/`` into model entries, from any ``ArtifactStorage``.

A model folder holds an optional ``model.yaml`` and integer-named version folders. Other
entries (hidden files, READMEs, folders with non-integer names) are skipped; non-integer
folder names are reported so a typo does not go unnoticed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ferry.errors import ManifestError
from ferry.manifest import MANIFEST_FILE, ModelManifest, manifest_from_text
from ferry.repository.storage import ArtifactStorage, LocalStorage, open_storage


@dataclass
class ModelEntry:
    """One model folder: its manifest (or the error reading it) and its version folders."""

    name: str
    path: Path
    manifest: ModelManifest | None
    versions: dict[int, Path] = field(default_factory=dict)
    """Version -> local folder (for remote storage: where it is cached once materialized)."""
    error: str | None = None
    """Why the model cannot be served at all (bad manifest), else None."""
    skipped: list[str] = field(default_factory=list)
    """Folder names that are not integer versions."""
    fingerprints: dict[int, str] = field(default_factory=dict)
    """Version -> a digest that changes when any of its files, or the manifest, changes."""
    storage: ArtifactStorage | None = None


def scan_repository(root: Path | ArtifactStorage) -> dict[str, ModelEntry]:
    """Every model folder of the repository, by name."""
    storage = root if isinstance(root, ArtifactStorage) else open_storage(root)
    return {name: scan_model(storage, name) for name in storage.list_models()}


def scan_model(where: ArtifactStorage | Path, model: str | None = None) -> ModelEntry:
    """One model folder (``scan_model(path)`` reads a local folder directly)."""
    if isinstance(where, ArtifactStorage):
        storage, name = where, model or ""
    else:
        storage, name = LocalStorage(where.parent), where.name
    source = f"{storage.uri}/{name}/{MANIFEST_FILE}"
    text = storage.read_manifest(name)
    manifest: ModelManifest | None
    error = None
    try:
        manifest = manifest_from_text(text, source)
    except ManifestError as exc:
        manifest, error = None, exc.message
    base = Path(storage.uri) / name if isinstance(storage, LocalStorage) else Path(name)
    entry = ModelEntry(name, base, manifest, error=error, storage=storage)
    manifest_digest = hashlib.sha1((text or "").encode(), usedforsecurity=False).hexdigest()
    for folder, fingerprint in sorted(storage.list_versions(name).items()):
        if folder.isascii() and folder.isdigit():
            number = int(folder)
            entry.versions[number] = storage.local_path(name, folder)
            entry.fingerprints[number] = f"{fingerprint[:20]}-{manifest_digest[:8]}"
        else:
            entry.skipped.append(folder)
    return entry


def sha256_of(version_dir: Path) -> str:
    """A digest over every file in the version folder (names and contents, sorted)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        if "__pycache__" in file.parts or file.name == ".complete":
            continue
        digest.update(file.relative_to(version_dir).as_posix().encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
