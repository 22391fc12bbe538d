"""Every Prometheus metric Ferry exports, defined in one place (names, labels, buckets).

Each server owns a ``Metrics`` with its own ``CollectorRegistry``, so several servers in
one process (tests) never share counters. Per-request and per-batch figures are counted by
``VersionMetrics`` in plain Python on the event loop thread (a bisect and two additions, no
locks, no label lookups) and turned into Prometheus families only when ``/metrics`` is
scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ferry.monitoring.stats import VersionStats

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's metrics registry and every metric in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._versions: dict[tuple[str, str], VersionMetrics] = {}
        # per-request metrics are counted in plain Python on the event loop thread and
        # exported at scrape time by _HotPathCollector: no locks on the request path
        r.register(_HotPathCollector(self._versions))
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
        self.traffic_share = Gauge(
            "ferry_endpoint_traffic_share", "Share of an endpoint's traffic (requests that "
            "name no version) its policy sends to each version now (docs/rollouts.md).",
            ["model", "version"], registry=r)

        # -- HTTP server (ferry.protocols.http): rare events only, never per request ---------
        self.http_connections = Gauge(
            "ferry_http_connections", "Open HTTP connections.", registry=r)
        self.http_connections_refused = Counter(
            "ferry_http_connections_refused", "HTTP connections refused (503, then closed) "
            "because --max-connections were open.", registry=r)
        self.http_connections_closed = Counter(
            "ferry_http_connections_closed", "HTTP connections closed by the server before the "
            "client: header_timeout, body_timeout, idle_timeout (keep-alive), send_timeout (the "
            "client read nothing) or drain (still busy at the shutdown deadline).", ["reason"],
            registry=r)
        self.http_rejects = Counter(
            "ferry_http_early_rejects", "Requests answered before being read to the end, then "
            "closed: 400 malformed, 413 body too large, 431 header too large, 404/405 to an "
            "Expect: 100-continue, 408 to a request late behind pipelined ones.", ["status"],
            registry=r)
        self.http_write_pauses = Counter(
            "ferry_http_write_pauses", "Times a connection's send buffer filled (the client "
            "reads slower than it asks): reading and the next pipelined request wait.",
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
        """The hot-path metrics of one version (the same object for the same version, so
        counts survive reloads)."""
        key = (model, str(version))
        found = self._versions.get(key)
        if found is None:
            found = self._versions[key] = VersionMetrics(self, model, str(version))
        return found

    def exposition(self) -> bytes:
        """The text format served at ``GET /metrics``."""
        return generate_latest(self.registry)


class _Histogram:
    """Bucket counts and a sum; ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family_sample(self) -> tuple[list[tuple[str, float]], float]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            buckets.append((floatToGoString(bound), running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return buckets, self.total


class VersionMetrics:
    """One version's hot-path metrics, recorded on the event loop thread without locks."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics = metrics
        self._labels = (model, version)
        self.outcomes: dict[str, int] = {"success": 0}
        self.request = _Histogram(_LATENCY_BUCKETS)
        self.queue = _Histogram(_LATENCY_BUCKETS)
        self.compute = _Histogram(_LATENCY_BUCKETS)
        self.batch = _Histogram(_BATCH_BUCKETS)
        self.ready = metrics.versions_ready.labels(model, version)
        self.stats = VersionStats()
        """What the statistics extension needs beyond these (``monitoring/stats.py``)."""

    def request_done(self, seconds: float, rows: int = 1, finished: float = 0.0) -> None:
        """A successful request of ``rows`` rows that took ``seconds`` and ended at
        ``finished`` (``time.monotonic()``)."""
        self.outcomes["success"] += 1
        self.request.observe(seconds)
        stats = self.stats
        stats.inferences += rows
        stats.last_inference = finished

    def request_failed(self, outcome: str, seconds: float = 0.0, finished: float = 0.0
                       ) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        stats = self.stats
        stats.fail_seconds += seconds
        if finished:
            stats.last_inference = finished

    def batch_done(self, rows: int, waits: list[float], compute: float, ok: bool = True
                   ) -> None:
        """A batch of ``rows`` rows ran for ``compute`` seconds after its requests waited
        ``waits``; ``ok`` is False when the model raised."""
        self.batch.observe(rows)
        self.compute.observe(compute)
        observe = self.queue.observe
        for w in waits:
            observe(w)
        stats = self.stats
        stats.compute_requests += len(waits)
        stats.compute_seconds += compute * len(waits)
        if not ok:
            stats.batch_failures += 1
            return
        sized = stats.batches.get(rows)
        if sized is None:
            stats.batches[rows] = [1, compute]
        else:
            sized[0] += 1
            sized[1] += compute

    def track_queue(self, depth: Callable[[], float]) -> None:
        self._metrics.queue_rows.labels(*self._labels).set_function(depth)

    def loaded(self, seconds: float) -> None:
        self._metrics.load_seconds.labels(*self._labels).set(seconds)


class _HotPathCollector(Collector):
    """Exports every version's hot-path counts as Prometheus families at scrape time."""

    _HISTOGRAMS = (
        ("request", "ferry_request_duration_seconds",
         "Inference time from decoded request to result, per request."),
        ("queue", "ferry_queue_duration_seconds", "Time a request waited in its version's queue."),
        ("compute", "ferry_compute_duration_seconds", "Time one batch spent in the runtime."),
        ("batch", "ferry_batch_size_rows", "Rows per executed batch."),
    )

    def __init__(self, versions: dict[tuple[str, str], VersionMetrics]) -> None:
        self._versions = versions

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ferry_requests", "Inference requests by model, version and outcome (success or "
            "the error's name).", labels=["model", "version", "outcome"])
        failures = CounterMetricFamily(
            "ferry_batch_failures", "Batches in which the model raised (every request of "
            "the batch failed with model_error).", labels=["model", "version"])
        families = {attr: HistogramMetricFamily(name, doc, labels=["model", "version"])
                    for attr, name, doc in self._HISTOGRAMS}
        for (model, version), vm in list(self._versions.items()):
            for outcome, count in list(vm.outcomes.items()):
                requests.add_metric([model, version, outcome], count)
            failures.add_metric([model, version], vm.stats.batch_failures)
            for attr, family in families.items():
                buckets, total = getattr(vm, attr).family_sample()
                family.add_metric([model, version], buckets, total)
        yield requests
        yield failures
        yield from families.values()
