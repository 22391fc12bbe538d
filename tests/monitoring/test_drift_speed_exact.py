"""The fast drift path computes the same numbers as scipy, bit for bit: one merge of the
two samples replaces scipy's sorts and searchsorted calls (``drift._Merged``), and windows
come back column-major from the store (``windows._columns``). No timings here: speed is
shown by ``bench/drift_vs_evidently.py``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ferry.evalstore.batches import build_batches
from ferry.evalstore.spill import Spill
from ferry.evalstore.windows import read_window
from ferry.evalstore.writer import StoreWriter
from ferry.monitoring.drift import DriftSettings, ks_2samp, numeric_drift, wasserstein
from ferry.types import InferenceRecord


def _pairs():
    rng = np.random.default_rng(5)
    yield rng.normal(size=60_000), rng.normal(0.05, 1.1, size=40_000)  # asymptotic KS
    yield rng.normal(size=12_000), rng.normal(0.2, 1, size=11_000)
    # ties within and between the samples (integers, rounded values, shared values)
    yield rng.integers(0, 20, 30_000).astype(float), rng.integers(0, 22, 25_000).astype(float)
    yield np.round(rng.normal(size=20_000), 2), np.round(rng.normal(0.3, 1, 15_000), 2)
    a = rng.exponential(size=30_000).astype(np.float32).astype(float)
    yield a, np.concatenate([a[:10_000], rng.exponential(size=20_000)])
    yield np.full(11_000, 3.0), np.full(12_000, 3.0)  # one value: D = 0, W = 0
    yield rng.normal(size=300), rng.normal(0.5, 1, size=700)  # scipy's exact path
    yield np.array([1.0]), np.array([2.0])


@pytest.mark.parametrize(("a", "b"), list(_pairs()))
def test_ks_and_wasserstein_are_scipys_numbers_exactly(a, b):
    ks = stats.ks_2samp(a, b)
    assert ks_2samp(a, b) == (ks.statistic, ks.pvalue)
    assert ks_2samp(np.sort(a), np.sort(b)) == (ks.statistic, ks.pvalue)
    assert wasserstein(a, b) == stats.wasserstein_distance(a, b)
    entry = numeric_drift(np.sort(a), b, float(np.std(a)), DriftSettings())
    assert (entry["statistic"], entry["p_value"]) == (ks.statistic, ks.pvalue)
    assert entry["linf"] == ks.statistic
    assert entry["wasserstein"] == stats.wasserstein_distance(a, b)


@pytest.mark.parametrize(("a", "b"), list(_pairs())[:5])
def test_psi_counts_match_searchsorted_on_the_sorted_window(a, b):
    ref, cur = np.sort(a), np.sort(b)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)))
    inner = edges[1:-1]
    p = np.diff(np.concatenate([[0], np.searchsorted(ref, inner), [len(ref)]])) / len(ref)
    q = np.diff(np.concatenate([[0], np.searchsorted(cur, inner), [len(cur)]])) / len(cur)
    p, q = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    expected = float(np.sum((q - p) * np.log(q / p))) if len(edges) > 2 else 0.0
    assert numeric_drift(ref, b, 1.0, DriftSettings())["psi"] == pytest.approx(expected,
                                                                               rel=1e-12)


def test_without_p_values_the_distance_decides():
    rng = np.random.default_rng(2)
    ref, cur = np.sort(rng.normal(size=20_000)), rng.normal(0.3, 1, 20_000)
    full = numeric_drift(ref, cur, 1.0, DriftSettings())
    quick = numeric_drift(ref, cur, 1.0, DriftSettings(p_values=False))
    assert quick["p_value"] is None and full["p_value"] < 0.01
    assert {k: v for k, v in quick.items() if k != "p_value"} == {
        k: v for k, v in full.items() if k != "p_value"}
    calm = numeric_drift(ref, rng.normal(0.01, 1, 20_000), 1.0, DriftSettings(p_values=False))
    assert calm["drifted"] is False


def test_windows_are_column_major_with_the_logged_values(tmp_path):
    w = StoreWriter(f"sqlite:///{tmp_path / 's.db'}", Spill(tmp_path / "spill", 1 << 20))
    w._connect()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype(np.float32)

    def records(rows: range) -> list[InferenceRecord]:
        return [InferenceRecord(f"r{i}", "m", 1, {"x": x[i:i + 1]}, {"y": x[i:i + 1, 0]},
                                "success", None, 0.001, 100.0 + i) for i in rows]

    # two batches whose times interleave: read back in request-time order
    w._insert(build_batches(records(range(0, 600, 2))))
    w._insert(build_batches(records(range(1, 600, 2))))
    data = read_window(w.engine, "m", 0, 10_000)
    assert data.inputs["x"].flags.f_contiguous
    np.testing.assert_array_equal(data.inputs["x"], x)
    np.testing.assert_array_equal(data.outputs["y"], x[:, 0])
    assert data.request_ids.tolist() == [f"r{i}" for i in range(600)]
    assert data.ts.tolist() == [100.0 + i for i in range(600)]
    part = read_window(w.engine, "m", 350.0, 360.0)  # cuts inside one batch
    np.testing.assert_array_equal(part.inputs["x"], x[250:260])
    w.engine.dispose()
