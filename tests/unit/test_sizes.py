"""How many rows a version runs at once (``scheduler/sizes.py``), by enumeration: the
limits a signature and ``model.yaml`` give, where a request runs, and its chunks."""

from __future__ import annotations

import itertools

import pytest

from ferry.errors import ManifestError
from ferry.manifest import parse_manifest
from ferry.errors import ModelLoadError
from ferry.scheduler.sizes import (DEFAULT_MAX_BATCH_SIZE, Placement, batch_limits,
                                   chunk_sizes, placement)
from ferry.types import Signature, TensorSpec


def sig(*firsts: int | None) -> Signature:
    """One input and one output per pair of first dimensions (None: a 0-d tensor)."""
    def spec(name: str, first: int | None) -> TensorSpec:
        return TensorSpec(name, "FP32", () if first is None else (first, 4))
    half = len(firsts) // 2
    return Signature(tuple(spec(f"in{i}", f) for i, f in enumerate(firsts[:half])),
                     tuple(spec(f"out{i}", f) for i, f in enumerate(firsts[half:])))


FIRSTS = [-1, 1, 8, None]


@pytest.mark.parametrize("dims", list(itertools.product(FIRSTS, repeat=2)))
@pytest.mark.parametrize("manifest_max", [None, 0, 16])
@pytest.mark.parametrize("manifest_split", [None, False, True])
def test_batch_limits(dims: tuple[int | None, int | None], manifest_max: int | None,
                      manifest_split: bool | None) -> None:
    signature = sig(*dims)
    if manifest_max and set(dims) != {-1}:  # a batch the tensors cannot take: load error
        with pytest.raises(ModelLoadError, match="without a variable batch axis first"):
            batch_limits(signature, manifest_max, manifest_split)
        return
    limits = batch_limits(signature, manifest_max, manifest_split)
    if manifest_max is not None:  # the manifest decides
        assert limits.max_batch_size == manifest_max
        assert limits.split is (bool(manifest_split) and manifest_max > 0)
        assert limits.signature == signature
    elif set(dims) == {-1}:  # a dynamic batch axis everywhere
        assert limits.max_batch_size == DEFAULT_MAX_BATCH_SIZE
        assert limits.split is bool(manifest_split)
        assert limits.signature == signature
    elif set(dims) == {1}:  # a batch of one fixed in the graph: served as -1, split
        assert limits.max_batch_size == 1
        assert limits.split is (manifest_split is not False)
        assert [t.shape for t in limits.signature.inputs + limits.signature.outputs] == \
            [(-1, 4), (-1, 4)]
    else:  # no batch axis (or one fixed above 1): each request runs as it is
        assert (limits.max_batch_size, limits.split) == (0, False)
        assert limits.signature == signature


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 64, 200])
@pytest.mark.parametrize("max_batch_size", [0, 1, 8, 64])
@pytest.mark.parametrize("split", [False, True])
def test_placement(rows: int, max_batch_size: int, split: bool) -> None:
    where = placement(rows, max_batch_size, split)
    if max_batch_size == 0:
        assert where is Placement.ALONE
    elif rows <= max_batch_size:
        assert where is Placement.MERGE
    else:
        assert where is (Placement.CHUNKS if split else Placement.ALONE)


@pytest.mark.parametrize("rows", range(1, 30))
@pytest.mark.parametrize("size", [1, 2, 5, 8, 29, 64])
def test_chunk_sizes(rows: int, size: int) -> None:
    sizes = chunk_sizes(rows, size)
    assert sum(sizes) == rows
    assert all(1 <= n <= size for n in sizes)
    assert all(n == size for n in sizes[:-1])  # full chunks, then the rest
    assert len(sizes) == -(-rows // size)


def test_chunk_sizes_of_the_issue() -> None:
    assert chunk_sizes(200, 64) == [64, 64, 64, 8]
    with pytest.raises(ValueError):
        chunk_sizes(0, 64)


def test_manifest_split_needs_a_batch_axis() -> None:
    assert parse_manifest({"max_batch_size": 8, "split_large_requests": True}) \
        .split_large_requests is True
    with pytest.raises(ManifestError, match="split_large_requests needs a batch axis"):
        parse_manifest({"max_batch_size": 0, "split_large_requests": True})
