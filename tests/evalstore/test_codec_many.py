"""The writer's batch encoding gives the same blobs as per-record encoding, the reader's
uniform fast path the same tensors as the general one, and the monitor's KS the same
numbers as scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ferry.evalstore import codec
from ferry.monitoring.drift import ks_2samp


def test_encode_many_matches_encode_and_decodes_back():
    rng = np.random.default_rng(0)
    alike = [{"x": rng.normal(size=(1, 4)).astype(np.float32), "n": np.arange(1)}
             for _ in range(50)]
    mixed = alike[:3] + [{"x": rng.normal(size=(2, 4)).astype(np.float32),
                          "n": np.arange(2)}]
    texts = [{"s": np.array(["a", "bc"], dtype=object)}] * 3
    for many in (alike, mixed, texts, alike[:1], []):
        blobs = codec.encode_many(many)
        assert blobs == [codec.encode(t) for t in many]
    tensors, rows = codec.decode_many(codec.encode_many(alike))
    assert rows.tolist() == [1] * 50
    np.testing.assert_array_equal(tensors["x"], np.concatenate([t["x"] for t in alike]))
    tensors, rows = codec.decode_many(codec.encode_many(mixed))
    assert rows.tolist() == [1, 1, 1, 2]
    np.testing.assert_array_equal(tensors["x"], np.concatenate([t["x"] for t in mixed]))


@pytest.mark.parametrize("sizes", [(50_000, 50_000), (20_000, 100_000), (300, 700)])
def test_ks_matches_scipy(sizes):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=sizes[0]), rng.normal(0.03, 1, size=sizes[1])
    ref = stats.ks_2samp(a, b)
    statistic, p_value = ks_2samp(np.sort(a), np.sort(b))
    assert statistic == pytest.approx(ref.statistic, abs=1e-12)
    assert p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
