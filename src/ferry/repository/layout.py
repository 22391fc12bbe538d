"""Parse ``<repo>/<model>/<version>/`` on local disk into model entries.

A model folder holds an optional ``model.yaml`` and integer-named version folders. Other
entries (hidden files, READMEs, folders with non-integer names) are skipped; non-integer
folder names are reported so a typo does not go unnoticed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ferry.errors import ManifestError
from ferry.manifest import MANIFEST_FILE, ModelManifest, load_manifest


@dataclass
class ModelEntry:
    """One model folder: its manifest (or the error reading it) and its version folders."""

    name: str
    path: Path
    manifest: ModelManifest | None
    versions: dict[int, Path] = field(default_factory=dict)
    error: str | None = None
    """Why the model cannot be served at all (bad manifest), else None."""
    skipped: list[str] = field(default_factory=list)
    """Folder names that are not integer versions."""


def scan_repository(root: Path) -> dict[str, ModelEntry]:
    """Every model folder under ``root``, by name."""
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} is not a folder")
    models = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith((".", "_")):
            models[child.name] = scan_model(child)
    return models


def scan_model(path: Path) -> ModelEntry:
    """One model folder."""
    manifest: ModelManifest | None
    error = None
    try:
        manifest = load_manifest(path / MANIFEST_FILE)
    except ManifestError as exc:
        manifest, error = None, exc.message
    entry = ModelEntry(path.name, path, manifest, error=error)
    for child in sorted(path.iterdir()):
        if not child.is_dir() or child.name.startswith((".", "_")):
            continue
        if child.name.isascii() and child.name.isdigit():
            entry.versions[int(child.name)] = child
        else:
            entry.skipped.append(child.name)
    return entry


def sha256_of(version_dir: Path) -> str:
    """A digest over every file in the version folder (names and contents, sorted)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        if "__pycache__" in file.parts:
            continue
        digest.update(file.relative_to(version_dir).as_posix().encode() + b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
