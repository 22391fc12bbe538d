"""Every Prometheus metric Ferry exports, defined in one place (names, labels, buckets).

Each server owns a ``Metrics`` with its own ``CollectorRegistry``, so several servers in
one process (tests) never share counters. Hot paths hold pre-labelled children
(``VersionMetrics``) so recording costs no label lookups.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's metrics registry and every metric in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ferry_requests", "Inference requests by model, version and outcome "
            "(success or the error's name).", ["model", "version", "outcome"], registry=r)
        self.request_seconds = Histogram(
            "ferry_request_duration_seconds", "Inference time from decoded request to result, "
            "per request.", ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram(
            "ferry_queue_duration_seconds", "Time a request waited in its version's queue.",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_seconds = Histogram(
            "ferry_compute_duration_seconds", "Time one batch spent in the runtime.",
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram(
            "ferry_batch_size_rows", "Rows per executed batch.", ["model", "version"],
            buckets=_BATCH_BUCKETS, registry=r)
        self.queue_rows = Gauge(
            "ferry_queue_rows", "Rows waiting in a version's queue.", ["model", "version"],
            registry=r)
        self.load_seconds = Gauge(
            "ferry_model_load_seconds", "How long the version took to load.",
            ["model", "version"], registry=r)
        self.load_failures = Counter(
            "ferry_model_load_failures", "Versions that failed to load.", ["model"], registry=r)
        self.repository_errors = Counter(
            "ferry_repository_errors", "Repository scans that failed (storage unreachable).",
            registry=r)
        self.versions_ready = Gauge(
            "ferry_model_ready", "1 while the version is live, else 0.", ["model", "version"],
            registry=r)
        # -- evaluation store and monitoring (ferry.evalstore, ferry.monitoring) -------------
        self.store_written = Counter(
            "ferry_evalstore_written", "Prediction records written to the evaluation store.",
            registry=r)
        self.store_spilled = Counter(
            "ferry_evalstore_spilled", "Prediction records spilled to disk while the store "
            "was unreachable (written later).", registry=r)
        self.store_dropped = Counter(
            "ferry_evalstore_dropped", "Prediction records lost: buffer_full (the writer is "
            "far behind) or spill_full (store down and the spill at its limit).", ["reason"],
            registry=r)
        self.store_buffered = Gauge(
            "ferry_evalstore_buffered_records", "Records waiting in memory to be written.",
            registry=r)
        self.store_spill_bytes = Gauge(
            "ferry_evalstore_spill_bytes", "Bytes of records waiting in the on-disk spill.",
            registry=r)
        self.store_up = Gauge(
            "ferry_evalstore_up", "1 while the evaluation store's database is reachable.",
            registry=r)
        self.feedback = Counter(
            "ferry_feedback", "Feedback received, by outcome (joined, duplicate, unknown).",
            ["outcome"], registry=r)
        self.drift_distance = Gauge(
            "ferry_drift_distance", "Drift distance of a feature in the last monitored window "
            "(normalized Wasserstein for numbers, Jensen-Shannon for categories).",
            ["model", "version", "feature"], registry=r)
        self.drift_drifted = Gauge(
            "ferry_drift_drifted", "1 if the feature drifted in the last monitored window.",
            ["model", "version", "feature"], registry=r)
        self.drift_share = Gauge(
            "ferry_drift_feature_share", "Share of input features that drifted in the last "
            "monitored window.", ["model", "version"], registry=r)
        self.quality_violations = Gauge(
            "ferry_quality_violations", "Data-quality violations (rows) in the last monitored "
            "window, by rule.", ["model", "version", "rule"], registry=r)
        self.alerts_firing = Gauge(
            "ferry_alert_firing", "1 while the alert's condition holds.", ["alert", "model"],
            registry=r)

    def version(self, model: str, version: int) -> VersionMetrics:
        return VersionMetrics(self, model, str(version))

    def exposition(self) -> bytes:
        """The text format served at ``GET /metrics``."""
        return generate_latest(self.registry)


class VersionMetrics:
    """Pre-labelled metrics of one live version, for the hot path."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics = metrics
        self._labels = (model, version)
        self._success = metrics.requests.labels(model, version, "success")
        self._request = metrics.request_seconds.labels(model, version)
        self._queue = metrics.queue_seconds.labels(model, version)
        self._compute = metrics.compute_seconds.labels(model, version)
        self._batch = metrics.batch_rows.labels(model, version)
        self.ready = metrics.versions_ready.labels(model, version)

    def request_done(self, seconds: float) -> None:
        self._success.inc()
        self._request.observe(seconds)

    def request_failed(self, outcome: str) -> None:
        self._metrics.requests.labels(*self._labels, outcome).inc()

    def batch_done(self, rows: int, waits: list[float], compute: float) -> None:
        self._batch.observe(rows)
        self._compute.observe(compute)
        observe = self._queue.observe
        for w in waits:
            observe(w)

    def track_queue(self, depth: Callable[[], float]) -> None:
        self._metrics.queue_rows.labels(*self._labels).set_function(depth)

    def loaded(self, seconds: float) -> None:
        self._metrics.load_seconds.labels(*self._labels).set(seconds)
