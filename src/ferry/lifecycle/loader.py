"""Check and load one model version: the steps ``ferry serve`` (``VersionHarness``) and
``ferry batch`` share, so both refuse the same versions with the same messages.

``check_version`` decides whether a version folder may be loaded at all, without loading
it: the runtime (``runtime:`` in ``model.yaml``, else guessed from the artifact), the
packages that runtime needs (``Runtime.requires``: a missing one names the extra to
install), pickles only from a trusted repository, and the version's ``sha256:`` pin in
``model.yaml`` against the files. ``load_runtime`` then loads one copy of a checked version
(in any process: a ``CheckedVersion`` is plain, picklable data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ferry._extras import require
from ferry.errors import ModelLoadError, UntrustedArtifact
from ferry.manifest import ModelManifest
from ferry.repository.layout import sha256_of
from ferry.runtimes.base import Runtime
from ferry.runtimes.registry import guess_runtime, runtime_class


@dataclass(frozen=True)
class CheckedVersion:
    """A version folder that passed ``check_version``: enough to load it again anywhere."""

    name: str
    version: int
    path: Path
    manifest: ModelManifest
    runtime: str
    sha256: str


def check_version(name: str, version: int, path: Path, manifest: ModelManifest,
                  trust_pickles: bool) -> CheckedVersion:
    """Raise ``ModelLoadError`` (``UntrustedArtifact`` for a pickle in an untrusted
    repository) or ``ExtraNotInstalled`` when the version must not or cannot be loaded."""
    runtime = manifest.runtime or guess_runtime(path)
    cls = runtime_class(runtime)
    if cls.executes_code_on_load and not trust_pickles:
        raise UntrustedArtifact(
            f"{path}: runtime {runtime!r} loads pickles, which run code from the file; pass "
            f"--trust-pickles (FERRY_TRUST_PICKLES=1) only if you trust this repository")
    for module in cls.requires:
        require(module, f"the {runtime} runtime (model {name} version {version})")
    sha256 = sha256_of(path)
    expected = manifest.sha256.get(version)
    if expected is not None and expected.lower() != sha256:
        raise ModelLoadError(f"{path}: sha256 is {sha256} but model.yaml expects "
                             f"{expected}; the files changed or are corrupt")
    return CheckedVersion(name, version, path, manifest, runtime, sha256)


def load_runtime(checked: CheckedVersion, threads: int | None = None) -> Runtime:
    """One loaded copy of ``checked``; ``threads`` overrides the manifest's intra-op threads
    (batch workers run one each, so they do not fight over cores)."""
    manifest = checked.manifest if threads is None else checked.manifest.model_copy(
        update={"threads": threads})
    runtime = runtime_class(checked.runtime)(manifest)
    runtime.load(checked.path)
    return runtime
