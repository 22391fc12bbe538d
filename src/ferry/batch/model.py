"""Find and load one model version for batch scoring, through the repository and the
runtime contract (the same artifacts and runtimes the server uses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ferry.errors import ModelLoadError, ModelNotFound, UntrustedArtifact, VersionNotFound
from ferry.manifest import ModelManifest
from ferry.repository.layout import scan_repository
from ferry.repository.version_policy import aspired_versions
from ferry.runtimes.base import Runtime
from ferry.runtimes.registry import guess_runtime, runtime_class


@dataclass(frozen=True)
class ModelVersion:
    """A resolved version: enough to load it again in another process."""

    name: str
    version: int
    path: Path
    manifest: ModelManifest
    runtime: str


def resolve(repository: Path, name: str, version: int | None) -> ModelVersion:
    """The version to score with: ``version``, or the newest one the version policy serves."""
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
    path = entry.versions[version]
    runtime = entry.manifest.runtime or guess_runtime(path)
    return ModelVersion(name, version, path, entry.manifest, runtime)


def load(model: ModelVersion, trust_pickles: bool, threads: int = 1) -> Runtime:
    """Load ``model`` with ``threads`` intra-op threads (batch workers run one each, so
    they do not fight over cores)."""
    cls = runtime_class(model.runtime)
    if cls.executes_code_on_load and not trust_pickles:
        raise UntrustedArtifact(f"{model.path}: runtime {model.runtime!r} loads pickles, which "
                                f"run code from the file; pass --trust-pickles only if you "
                                f"trust this repository")
    runtime = cls(model.manifest.model_copy(update={"threads": threads}))
    runtime.load(model.path)
    return runtime
