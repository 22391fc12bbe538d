"""EvalStore: the evaluation store of one server (writer, spill, layouts, references).

Built by the composition root from ``ServerSettings``; ``writer`` is registered as a
dataplane observer. ``register`` (after the repository is loaded) records each ready
version's feature layout, its monitoring settings (``model.yaml``'s ``monitoring:``) and
its reference file; they are written to the database by the writer thread whenever it
(re)connects, so a store that is down at start catches up. ``engine()`` raises
``StoreUnavailable`` while the database is down.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, delete, make_url, select

from ferry.errors import FerryError, StoreUnavailable
from ferry.evalstore.features import feature_layout
from ferry.evalstore.schema import model_versions, normalize_url, references
from ferry.evalstore.spill import Spill
from ferry.evalstore.writer import StoreWriter
from ferry.monitoring.metrics import Metrics
from ferry.settings import ServerSettings, sqlite_file

log = logging.getLogger("ferry.evalstore")


def default_spill_dir(url: str) -> Path:
    """Beside a SQLite file (``ferry.db`` → ``ferry.db-spill/``), else ``./ferry-spill``;
    absolute (against the working folder) either way."""
    file = sqlite_file(url)
    return Path(f"{file}-spill") if file is not None else Path("ferry-spill").absolute()


def _shown(url: str) -> str:
    """``url`` without its password, for the logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: the writer reports it when it connects
        return url.split("@")[-1]


class EvalStore:
    """Everything the server needs from the evaluation store."""

    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.url = normalize_url(settings.store)
        self._settings = settings
        spill_dir = (settings.store_spill_dir or default_spill_dir(self.url)).absolute()
        self.spill = Spill(spill_dir, settings.store_spill_max_bytes)
        log.info("evaluation store: %s", _shown(self.url))
        log.info("evaluation store spill folder (used while the database is down): %s",
                 spill_dir)
        self.writer = StoreWriter(
            self.url, self.spill, metrics, capacity=settings.store_buffer,
            flush_interval_s=settings.store_flush_interval_s,
            sample_rate=settings.store_sample_rate, sample_rates=settings.store_sample_rates,
            retention_days=settings.store_retention_days,
            retention=settings.store_retention, on_connect=self._sync,
            on_new_version=self._new_versions)
        self._layouts: dict[tuple[str, int], dict[str, Any]] = {}
        self._reference_files: dict[tuple[str, int], Path] = {}
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}

    def register(self, models: dict[str, Any]) -> None:
        """Record layouts, monitoring configs and reference files of the ready versions
        (``models`` is ``ModelManager.models``)."""
        from ferry.monitoring.config import MonitoringConfig, load_config
        from ferry.monitoring.reference import find_reference_file

        self._models = models
        rates: dict[str, float] = {}
        retention: dict[str, float] = {}
        for name, served in list(models.items()):
            try:
                # the manifest as scanned: its path may be a remote (s3://) repository
                cfg = load_config(served.entry.path, served.entry.manifest)
            except FerryError as exc:
                log.error("model %s: %s (monitoring uses defaults)", name, exc.message)
                cfg = MonitoringConfig()
            if cfg.sample_rate is not None:
                rates[name] = cfg.sample_rate
            if cfg.retention_days is not None:
                retention[name] = cfg.retention_days
            for number, harness in list(served.versions.items()):
                if not harness.ready:
                    continue
                doc = feature_layout(harness.signature, harness.manifest).to_json()
                doc["monitoring"] = cfg.model_dump()
                with self._lock:
                    self._layouts[(name, number)] = doc
                    ref = find_reference_file(harness.path)
                    if ref is not None:
                        self._reference_files[(name, number)] = ref
        # model.yaml's settings, then the server's per-model settings over them
        self.writer.set_model_policies({**rates, **self._settings.store_sample_rates},
                                       {**retention, **self._settings.store_retention})
        if self.writer.engine is not None:
            self._sync(self.writer.engine)

    def _new_versions(self, pairs: set[tuple[str, int]]) -> None:
        """Writer thread: a version loaded after start (polling, model control) shows up."""
        if any(p not in self._layouts for p in pairs):
            self.register(self._models)

    def layout_doc(self, model: str, version: int) -> dict[str, Any] | None:
        return self._layouts.get((model, version))

    def _sync(self, engine: Engine) -> None:
        """Write layouts and (new or changed) reference profiles; writer thread."""
        with self._lock:
            layouts = dict(self._layouts)
            files = dict(self._reference_files)
        now = time.time()
        with engine.begin() as conn:
            for (model, version), doc in layouts.items():
                conn.execute(delete(model_versions).where(model_versions.c.model == model,
                                                          model_versions.c.version == version))
                conn.execute(model_versions.insert(), {"model": model, "version": version,
                                                       "layout": orjson.dumps(doc).decode(),
                                                       "updated": now})
        for (model, version), path in files.items():
            try:
                raw = path.read_bytes()
                sha = hashlib.sha256(raw).hexdigest()
                with engine.connect() as conn:
                    stored = conn.execute(select(references.c.sha256).where(
                        references.c.model == model, references.c.version == version)).scalar()
                if stored == sha:
                    continue
                self.save_reference(engine, model, version, raw, str(path), sha)
                log.info("model %s version %d: reference profile built from %s", model,
                         version, path)
            except FerryError as exc:
                log.error("model %s version %d: %s", model, version, exc.message)

    def save_reference(self, engine: Engine, model: str, version: int, raw: bytes,
                       source: str, sha: str | None = None, fmt: str | None = None
                       ) -> dict[str, Any]:
        """Profile reference data against the version's layout and store it."""
        from ferry.evalstore.features import FeatureLayout
        from ferry.monitoring.reference import read_table, reference_profile

        doc = self._layouts.get((model, version))
        if doc is None:
            from ferry.errors import VersionNotFound

            raise VersionNotFound(f"model {model!r} has no ready version {version}")
        profile = reference_profile(read_table(raw, fmt), FeatureLayout.from_json(doc))
        blob = profile.to_bytes()
        with engine.begin() as conn:
            conn.execute(delete(references).where(references.c.model == model,
                                                  references.c.version == version))
            conn.execute(references.insert(), {
                "model": model, "version": version, "source": source,
                "sha256": sha or hashlib.sha256(raw).hexdigest(), "created": time.time(),
                "profile": blob})
        return {"model": model, "version": version, "rows": profile.rows, "source": source,
                "features": {n: p.summary() for n, p in profile.features.items()}}

    def engine(self) -> Engine:
        engine = self.writer.engine
        if engine is None:
            raise StoreUnavailable(f"the evaluation store is unreachable "
                                   f"({self.writer.last_error or 'connecting'}); predictions "
                                   f"are being spilled to {self.spill.folder}")
        return engine

    def status(self) -> dict[str, Any]:
        w = self.writer
        return {"url": self.writer.engine.url.render_as_string() if w.engine is not None
                else self.url.split("@")[-1], "up": w.engine is not None,
                "error": w.last_error, "buffered": w.buffered, "written": w.written,
                "dropped": w.dropped, "spill_bytes": self.spill.size_bytes,
                "spill_dir": str(self.spill.folder)}
