"""Parse ``<repo>/<model>/<version>/`` into model entries, from any ``ArtifactStorage``.

A model folder holds an optional ``model.yaml``, an optional Triton ``config.pbtxt`` and
integer-named version folders. Other entries (hidden files, READMEs, folders with non-integer
names) are skipped; non-integer folder names are reported so a typo does not go unnoticed.

With both files, ``model.yaml`` wins key by key: each top-level key it sets replaces what
``config.pbtxt`` says for that key (``inputs`` as a whole, ``dynamic_batching`` as a whole,
...), and the overlap is logged. Triton's settings then stay in the file Triton reads, and
``model.yaml`` adds what only Ferry has (monitoring, warmup, threads, sha256) or overrides
a value for Ferry alone.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ferry.errors import ManifestError
from ferry.manifest import MANIFEST_FILE, ModelManifest, parse_manifest, settings_from_text
from ferry.repository.storage import ArtifactStorage, LocalStorage, open_storage
from ferry.repository.triton_config import CONFIG_FILE, TritonConfig, parse_config_text

log = logging.getLogger("ferry.repository")
_said: set[str] = set()  # log lines already written: the repository is scanned repeatedly


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
    unsupported_config: list[str] = field(default_factory=list)
    """Fields set in ``config.pbtxt`` that Ferry does not honour (shown in the metadata)."""


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
    folder_uri = f"{storage.uri}/{name}"
    text = storage.read_manifest(name)
    config_text = storage.read_model_text(name, CONFIG_FILE)
    manifest: ModelManifest | None
    error, config = None, None
    try:
        manifest, config = read_settings(text, config_text, folder_uri, name)
    except ManifestError as exc:
        manifest, error = None, exc.message
    base = Path(storage.uri) / name if isinstance(storage, LocalStorage) else Path(name)
    entry = ModelEntry(name, base, manifest, error=error, storage=storage)
    if config is not None:
        entry.unsupported_config = config.unsupported
    manifest_digest = hashlib.sha1(((text or "") + "\0" + (config_text or "")).encode(),
                                   usedforsecurity=False).hexdigest()
    for folder, fingerprint in sorted(storage.list_versions(name).items()):
        if folder.isascii() and folder.isdigit():
            number = int(folder)
            entry.versions[number] = storage.local_path(name, folder)
            entry.fingerprints[number] = f"{fingerprint[:20]}-{manifest_digest[:8]}"
        else:
            entry.skipped.append(folder)
    return entry


def read_settings(yaml_text: str | None, config_text: str | None, folder_uri: str,
                  model: str) -> tuple[ModelManifest, TritonConfig | None]:
    """The model's manifest from its ``model.yaml`` and ``config.pbtxt`` texts (None = no
    such file), merged by the rule in the module docstring; unsupported fields and the
    overlap are logged once."""
    yaml_source = f"{folder_uri}/{MANIFEST_FILE}"
    config_source = f"{folder_uri}/{CONFIG_FILE}"
    ours = settings_from_text(yaml_text, yaml_source) if yaml_text is not None else {}
    if config_text is None:
        return parse_manifest(ours, yaml_source), None
    config = parse_config_text(config_text, config_source, model)
    if config.unsupported:
        _log_once(f"{config_source}: Ferry does not support these fields, which have no "
                  f"effect: {', '.join(config.unsupported)}")
    overlap = sorted(set(ours) & set(config.settings))
    if overlap:
        _log_once(f"{yaml_source} overrides {CONFIG_FILE} for: {', '.join(overlap)}")
    source = config_source if yaml_text is None else f"{config_source} + {MANIFEST_FILE}"
    return parse_manifest({**config.settings, **ours}, source), config


def _log_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.warning("%s", message)


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
