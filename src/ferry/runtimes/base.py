"""The runtime contract: load one version, predict on named arrays, unload, describe itself.

Invariants:
- ``load`` is called once, before anything else, from a worker thread; it may be slow.
- ``predict`` takes and returns ``dict[str, np.ndarray]``. With batching, every input has the
  batch axis first and every output must have the same number of rows as the inputs.
  ``predict`` is called from one thread at a time per instance; runtimes whose
  ``thread_safe`` is True share one loaded copy across instances.
- ``signature`` is valid after ``load``.
- ``unload`` releases what ``load`` took; the object is not used afterwards.

Codecs and batching live outside the runtime. A worked example, the python runtime's
user class (``model.py`` in a version folder)::

    class Predictor:
        def load(self, version_dir):
            self.scale = 2.0
        def predict(self, inputs):
            return {"y": inputs["x"] * self.scale}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path

from ferry.datatypes import as_text
from ferry.manifest import ModelManifest
from ferry.types import Signature, Tensors


class Runtime(ABC):
    """Loads and runs one model version."""

    name: str = ""
    """The runtime's name in ``model.yaml`` (``runtime: onnx``)."""
    artifacts: tuple[str, ...] = ()
    """File names in a version folder that this runtime loads, in order of preference."""
    thread_safe: bool = True
    """Whether concurrent ``predict`` calls on one loaded copy are safe."""
    executes_code_on_load: bool = False
    """True for pickle-based formats: loading runs code from the artifact."""
    requires: tuple[str, ...] = ()
    """Optional modules ``load`` imports (``("xgboost",)``); checked before loading, so a
    missing one fails with the extra to install (``ferry._extras``)."""

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest

    @abstractmethod
    def load(self, version_dir: Path) -> None:
        """Load the version in ``version_dir``; raise ``ModelLoadError`` (or anything) on
        failure."""

    @abstractmethod
    def predict(self, inputs: Tensors) -> Tensors:
        """Run the model on named arrays and return named arrays."""

    @abstractmethod
    def signature(self) -> Signature:
        """The inputs and outputs, with manifest declarations applied."""

    def unload(self) -> None:
        """Release the model. The default drops references and lets GC reclaim them."""
        self.__dict__.clear()

    def artifact(self, version_dir: Path) -> Path:
        """The manifest's ``artifact``, else the first of ``artifacts`` present in
        ``version_dir``."""
        if self.manifest.artifact:
            path = version_dir / self.manifest.artifact
            if path.is_file():
                return path
            from ferry.errors import ModelLoadError

            raise ModelLoadError(f"{version_dir}: no {self.manifest.artifact} (the model file "
                                 f"the manifest names) for runtime {self.name!r}")
        for name in self.artifacts:
            path = version_dir / name
            if path.exists():
                return path
        from ferry.errors import ModelLoadError

        raise ModelLoadError(f"{version_dir}: no {' or '.join(self.artifacts)} for runtime "
                             f"{self.name!r}")

    def declared_signature(self, fallback: Signature | None = None) -> Signature | None:
        """The manifest's inputs and outputs; a side it leaves out comes from ``fallback``
        (e.g. the graph). None when neither side is known."""
        inputs = self.manifest.inputs
        outputs = self.manifest.outputs
        if inputs is not None and outputs is not None:
            return Signature(tuple(t.spec() for t in inputs), tuple(t.spec() for t in outputs))
        if fallback is None:
            return None
        return Signature(
            tuple(t.spec() for t in inputs) if inputs is not None else fallback.inputs,
            tuple(t.spec() for t in outputs) if outputs is not None else fallback.outputs)


def with_text_inputs(signature: Signature, names: set[str] | frozenset[str]) -> Signature:
    """``signature`` with its BYTES inputs in ``names`` marked as text (``TensorSpec.text``):
    requests' bytes reach the runtime as UTF-8 decoded ``str``."""
    return Signature(tuple(replace(s, text=True) if s.datatype == "BYTES" and s.name in names
                           else s for s in signature.inputs), signature.outputs)


def text_inputs(inputs: Tensors, names: tuple[str, ...]) -> Tensors:
    """``inputs`` with the tensors named in ``names`` as ``str`` arrays. Served requests
    arrive decoded already (``check_inputs``); warm-up and batch scoring may pass bytes."""
    return {name: as_text(arr, f"input {name!r}") if name in names else arr
            for name, arr in inputs.items()}
