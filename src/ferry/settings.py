"""ServerSettings: every knob of ``ferry serve``, from flags or ``FERRY_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def bundled_repository() -> Path:
    """The example repository of a source checkout (``examples/repository``), else ./models."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "repository"
        if (parent / "pyproject.toml").exists() and candidate.parent.exists():
            return candidate
    return Path("models")


def absolute_sqlite_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute against the working folder
    (``sqlite:///ferry.db`` -> ``sqlite:////srv/app/ferry.db``), so the file a server or a
    command opens does not change when a later step changes folder, and the logs say where
    it is. Other URLs, ``sqlite://`` and ``sqlite:///:memory:`` are returned unchanged."""
    scheme, sep, rest = url.partition(":///")
    if not sep or scheme.split("+")[0].lower() != "sqlite" or "/" in scheme:
        return url
    path, query_sep, query = rest.partition("?")
    if not path or path == ":memory:" or path.startswith("file:"):
        return url
    return f"{scheme}:///{os.path.abspath(path)}{query_sep}{query}"


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (absolute), None for other URLs."""
    scheme, sep, rest = absolute_sqlite_url(url).partition(":///")
    if not sep or scheme.split("+")[0].lower() != "sqlite":
        return None
    path = rest.partition("?")[0]
    return Path(path) if os.path.isabs(path) else None


class ServerSettings(BaseSettings):
    """Settings of one Ferry server. Environment variables use the ``FERRY_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="forbid")

    repository: str = Field(default_factory=lambda: str(bundled_repository()))
    """The model repository ``<repo>/<model>/<version>/``: a folder or an fsspec URL
    (``s3://bucket/repo``, ``gs://...``, ``file://...``)."""
    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 for every interface."""
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8000
    """HTTP port; 0 picks a free one (printed at start)."""
    grpc_port: Annotated[int, Field(ge=-1, le=65535)] = 8001
    """gRPC port; 0 picks a free one, -1 turns gRPC off."""
    poll_s: Annotated[float, Field(ge=0)] = 0.0
    """Rescan the repository every this many seconds (0 = load once at start)."""
    model_control: Literal["none", "poll", "explicit"] | None = None
    """none: load once; poll: rescan every ``poll_s``; explicit: load only what
    ``load_models`` names at start, then only through the repository API. Default: poll
    when ``poll_s`` > 0, else none."""
    load_models: list[str] = []
    """With explicit model control: models to load at start."""
    model_control_api: bool = True
    """Allow ``/v2/repository/models/{m}/load|unload`` (and the gRPC equivalents)."""
    admin_token: str | None = None
    """When set, model-control calls need ``Authorization: Bearer <token>`` (from any
    address); when unset they are allowed only from loopback."""
    shared_memory: bool = True
    """Serve Triton's system shared memory extension (``/v2/systemsharedmemory``): callers
    on loopback (or with ``admin_token``) may map POSIX shared memory objects of this host
    and pass tensors through them."""
    cache_dir: Path | None = None
    """Local cache for versions fetched from object storage (default ~/.cache/ferry)."""
    trust_pickles: bool = False
    """Allow runtimes that unpickle artifacts (sklearn): loading a pickle runs its code."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Logging level of the server."""
    keep_alive_s: Annotated[float, Field(gt=0)] = 75.0
    """Close HTTP connections idle (nothing running, nothing received) for this long
    (uvicorn's is 5 s, nginx's 75 s: clients' pools reuse them)."""
    max_body_bytes: Annotated[int, Field(gt=0)] = 64 * 1024 * 1024
    """Largest request body; bigger ones get 413 without being read."""
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """A request's line and headers must arrive within this many seconds of their first
    byte (a new connection's first request: of the accept, when sooner than
    ``keep_alive_s``), however slowly they trickle; else the connection is closed. Real
    clients send them in one round trip; 10 s leaves room for lossy links and cuts slow-loris
    senders 6x sooner than nginx's 60 s."""
    body_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """A request body must arrive within this many seconds of its first byte (of the
    ``100 Continue`` when the client waited for one); else the connection is closed. 60 s
    carries a 64 MiB body at ~9 Mbit/s: raise it for larger bodies over slower links."""
    send_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """Close a connection whose client reads nothing of its responses for this long (its
    send buffer stays full), as nginx's ``send_timeout``."""
    max_header_bytes: Annotated[int, Field(gt=0)] = 32 * 1024
    """Largest request line and headers (URL, names and values); more gets 431 and the
    connection closes. Kestrel's limit; nginx allows 4 x 8 KiB lines."""
    max_connections: Annotated[int, Field(gt=0)] = 4096
    """Open HTTP connections at most; a connection over it gets 503 and is closed at once.
    Keep it under the process's open-file limit (``ulimit -n``)."""
    max_pipeline_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    """Bytes of pipelined requests (bodies and headers) a connection may queue behind the one
    running; past it the server stops reading from that connection until the queue drains."""
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    """On SIGTERM/SIGINT, how long in-flight HTTP requests may finish; then they are
    cancelled and their connections closed, before the models unload."""
    request_timeout_s: Annotated[float, Field(ge=0)] = 60.0
    """Default deadline of an inference request (0 = none); clients may set a shorter one."""
    predictions_url: str | None = None
    """Database holding tables written by ``ferry batch --key``, served by key at
    ``GET /ferry/v1/predictions/{table}/{key}`` (e.g. ``sqlite:///preds.db``)."""
    store: str = "sqlite:///ferry.db"
    """Evaluation store URL: ``sqlite:///PATH`` (default ``ferry.db`` in the working folder),
    ``postgresql://USER@HOST/DB``, or ``none`` to record nothing. A relative SQLite path is
    made absolute against the working folder at start (and logged)."""
    store_sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Share of inferences recorded (1 = every one)."""
    store_sample_rates: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    """Per-model sample rates, e.g. ``FERRY_STORE_SAMPLE_RATES='{"fraud": 0.1}'``."""
    store_retention_days: Annotated[float, Field(gt=0)] | None = 30.0
    """Predictions older than this are deleted (hourly); None keeps everything."""
    store_retention: dict[str, Annotated[float, Field(gt=0)]] = {}
    """Per-model retention in days, overriding ``store_retention_days``."""
    store_flush_interval_s: Annotated[float, Field(gt=0)] = 0.2
    """How often buffered records are written; also bounds what a SIGKILL can lose."""
    store_buffer: Annotated[int, Field(gt=0)] = 100_000
    """Records held in memory while waiting to be written; more are dropped and counted."""
    store_spill_dir: Path | None = None
    """Where records wait while the database is down (default: beside a SQLite file,
    ``<file>-spill``, else ``./ferry-spill``); made absolute at start (and logged)."""
    store_spill_max_bytes: Annotated[int, Field(gt=0)] = 1 << 30
    """Largest spill on disk; past it records are dropped, counted and logged."""
    alerts_interval_s: Annotated[float, Field(ge=0)] = 60.0
    """How often alert rules (``monitoring: alerts:`` in ``model.yaml``) are evaluated;
    0 disables them."""
    endpoint_poll_s: Annotated[float, Field(ge=0)] = 1.0
    """How often this server checks the evaluation store for endpoint policies changed by
    another server sharing it (one indexed query); 0 turns the check off."""
    routing_seed: int | None = None
    """Seed of the split policies' random draws, so that a run draws the same sequence
    (tests, reproducible simulations); unset: seeded from the OS. Sticky keys never draw."""
    schedules: bool = True
    """Run the batch schedules of the run-record store (``ferry schedule add``) in this
    server, as ``ferry scheduler`` does: due fires start ``ferry batch`` processes, STALE
    schedules are logged as alerts and exported as ``ferry_batch_schedule_stale`` on
    ``/metrics``. Several servers (or a ``ferry scheduler``) on one store never start a fire
    twice. Off (``FERRY_SCHEDULES=false``) when a separate ``ferry scheduler`` runs them."""
    batch_store: str | None = None
    """The run-record store holding the schedules (env ``FERRY_BATCH_STORE``, the variable
    ``ferry batch`` and ``ferry schedule`` read). Default: the evaluation store ``store``
    (both default to ``sqlite:///ferry.db``); with ``store=none`` and no ``batch_store``,
    schedules are not run."""
    schedules_poll_s: Annotated[float, Field(gt=0)] = 15.0
    """Seconds between two passes of the scheduler (a fire starts at most this late)."""

    @field_validator("store", "batch_store", "predictions_url")
    @classmethod
    def _absolute_sqlite(cls, url: str | None) -> str | None:
        return None if url is None else absolute_sqlite_url(url)

    @field_validator("store_spill_dir", "cache_dir")
    @classmethod
    def _absolute_dir(cls, path: Path | None) -> Path | None:
        return None if path is None else Path(os.path.abspath(path))

    def schedules_store(self) -> str | None:
        """The store whose schedules this server runs, or None when it runs none."""
        if not self.schedules:
            return None
        if self.batch_store:
            return self.batch_store
        return None if self.store.lower() == "none" else self.store

    def control_mode(self) -> str:
        """The effective model-control mode."""
        if self.model_control is not None:
            return self.model_control
        return "poll" if self.poll_s > 0 else "none"
