"""Choose the model version a batch run scores with; it is checked (runtime, extras,
trusted pickles, ``sha256:`` pin) and later loaded by ``ferry.lifecycle.loader``, the code
``ferry serve`` loads versions with."""

from __future__ import annotations

from pathlib import Path

from ferry.errors import ModelLoadError, ModelNotFound, VersionNotFound
from ferry.lifecycle.loader import CheckedVersion, check_version
from ferry.repository.layout import scan_repository
from ferry.repository.version_policy import aspired_versions


def resolve(repository: Path, name: str, version: int | None,
            trust_pickles: bool) -> CheckedVersion:
    """The version to score with: ``version``, or the newest one the version policy serves,
    after ``check_version`` (so a run that could not load it fails before it starts)."""
    models = scan_repository(repository)
    entry = models.get(name)
    if entry is None:
        raise ModelNotFound(f"model {name!r} is not in {repository}; models there: "
                            f"{sorted(models) or 'none'}")
    if entry.error or entry.manifest is None:
        raise ModelLoadError(entry.error or f"model {name!r}: no manifest")
    if not entry.versions:
        raise VersionNotFound(f"model {name!r} has no version folders in {repository}")
    if version is None:
        live = aspired_versions(entry.versions, entry.manifest.version_policy)
        if not live:
            raise VersionNotFound(f"model {name!r}: its version policy selects none of "
                                  f"{sorted(entry.versions)}")
        version = live[0]
    if version not in entry.versions:
        raise VersionNotFound(f"model {name!r} has no version {version}; versions: "
                              f"{sorted(entry.versions)}")
    return check_version(name, version, entry.versions[version], entry.manifest,
                         trust_pickles)
