"""How many rows a version runs at once, and how a request larger than that runs (pure
functions, tested by enumeration in ``tests/unit/test_sizes.py``).

``batch_limits`` decides, once per version at load, from its signature and ``model.yaml``:

- ``max_batch_size``: the manifest's, else ``DEFAULT_MAX_BATCH_SIZE`` when every input and
  output has a variable first dimension, else 1 when every one has a first dimension fixed
  at 1 (a graph exported with a batch of one, as ``torch.onnx.export`` does without
  ``dynamic_axes``), else 0 (no batch axis: each request runs as it is);
- ``split``: whether the model cannot take more than ``max_batch_size`` rows in one call.
  The manifest's ``split_large_requests``, else true for the fixed batch of one;
- the served signature: for the fixed batch of one, the first dimension becomes -1, so a
  request of any number of rows passes the shape checks (and is run one row per call).

``placement`` decides, per request, where it runs: ``MERGE`` (it may share a batch with
other requests, up to ``max_batch_size`` rows: every request within the limit), ``ALONE``
(more rows than ``max_batch_size``, run as one call that holds nothing else) or ``CHUNKS``
(more rows, and the model needs ``split``: calls of ``max_batch_size`` rows, each holding
nothing else). A large request is never refused and never merged with other requests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from ferry.errors import ModelLoadError
from ferry.types import Signature

DEFAULT_MAX_BATCH_SIZE = 64


class Placement(Enum):
    MERGE = "merge"
    ALONE = "alone"
    CHUNKS = "chunks"


@dataclass(frozen=True, slots=True)
class BatchLimits:
    signature: Signature
    """The signature requests are checked against."""
    max_batch_size: int
    """At most this many rows in a batch the scheduler merges; 0 = no batch axis."""
    split: bool
    """A request of more rows runs in chunks of ``max_batch_size`` (else whole)."""


def _first_dims(signature: Signature) -> set[int | None]:
    return {t.shape[0] if t.shape else None for t in signature.inputs + signature.outputs}


def batch_limits(signature: Signature, max_batch_size: int | None = None,
                 split: bool | None = None) -> BatchLimits:
    """A version's limits from its runtime's ``signature`` and the manifest's
    ``max_batch_size`` and ``split_large_requests`` (None: not set)."""
    firsts = _first_dims(signature)
    if max_batch_size is not None:
        if max_batch_size > 0 and firsts != {-1}:
            fixed = next(t for t in signature.inputs + signature.outputs
                         if not t.shape or t.shape[0] != -1)
            raise ModelLoadError(
                f"max_batch_size is {max_batch_size} but the model's {fixed.name!r} has shape "
                f"{list(fixed.shape)}, without a variable batch axis first; use "
                f"max_batch_size 0")
        return BatchLimits(signature, max_batch_size, bool(split) and max_batch_size > 0)
    if firsts == {-1}:
        return BatchLimits(signature, DEFAULT_MAX_BATCH_SIZE, bool(split))
    if firsts == {1}:  # a batch of one fixed in the graph
        served = Signature(
            tuple(replace(t, shape=(-1, *t.shape[1:])) for t in signature.inputs),
            tuple(replace(t, shape=(-1, *t.shape[1:])) for t in signature.outputs))
        return BatchLimits(served, 1, True if split is None else split)
    return BatchLimits(signature, 0, False)


def placement(rows: int, max_batch_size: int, split: bool) -> Placement:
    """Where a checked request of ``rows`` rows runs (``max_batch_size`` 0: no batch axis,
    every request alone)."""
    if max_batch_size <= 0:
        return Placement.ALONE
    if rows <= max_batch_size:
        return Placement.MERGE
    return Placement.CHUNKS if split else Placement.ALONE


def chunk_sizes(rows: int, size: int) -> list[int]:
    """Rows per call when ``rows`` run in chunks of at most ``size``: full chunks, then the
    rest (``chunk_sizes(200, 64) == [64, 64, 64, 8]``)."""
    if rows < 1 or size < 1:
        raise ValueError(f"rows {rows} and size {size} must be at least 1")
    full, rest = divmod(rows, size)
    return [size] * full + ([rest] if rest else [])
