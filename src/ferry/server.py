"""The composition root: repository -> manager -> schedulers -> dataplane -> HTTP and gRPC.

``FerryServer.start()`` loads the repository and starts listening; ``stop()`` stops taking
connections, lets in-flight requests finish and unloads every version. ``run()`` does both
around SIGINT/SIGTERM on a uvloop event loop. Beside serving, the server runs the batch
schedules of its run-record store on a thread (``ferry.batch.schedules.SchedulerThread``)
unless ``schedules`` is off.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import Any

from ferry._extras import require_for_server
from ferry.errors import FerryError
from ferry.evalstore.store import EvalStore
from ferry.lifecycle.manager import ModelManager
from ferry.monitoring.alerts import AlertLoop
from ferry.monitoring.metrics import Metrics
from ferry.protocols.dataplane import DataPlane, ModelControl
from ferry.protocols.endpoint_routes import add_routes as add_endpoint_routes
from ferry.protocols.http import HttpLimits, HttpServerState, drain, serve_http
from ferry.protocols.rest import build_router
from ferry.protocols.router import Router
from ferry.protocols.shared_memory import SharedMemoryRegistry
from ferry.protocols.store_routes import add_routes as add_store_routes
from ferry.repository.storage import open_storage
from ferry.routing.control import EndpointControl
from ferry.settings import ServerSettings

log = logging.getLogger("ferry")


class FerryServer:
    """One Ferry server process's parts, wired together."""

    def __init__(self, settings: ServerSettings) -> None:
        require_for_server(settings)  # a missing extra fails here, before anything loads
        self.settings = settings
        self.metrics = Metrics()
        storage = open_storage(settings.repository, settings.cache_dir)
        self.manager = ModelManager(storage, self.metrics, settings.trust_pickles)
        control = ModelControl(settings.model_control_api, settings.admin_token)
        self.dataplane = DataPlane(self.manager, settings.request_timeout_s or None, control,
                                   self.metrics,
                                   SharedMemoryRegistry(settings.shared_memory,
                                                        settings.admin_token),
                                   settings.routing_seed)
        self.store: EvalStore | None = None
        if settings.store.lower() != "none":
            self.store = EvalStore(settings, self.metrics)
            self.dataplane.observers.append(self.store.writer)
        self.alerts: AlertLoop | None = None
        self.http_port = settings.http_port
        self.grpc_port = settings.grpc_port
        self._http: asyncio.Server | None = None
        self._http_state: HttpServerState | None = None
        self.router: Router | None = None
        """Every HTTP route (built by ``start``); ``Router.mount`` adds an app beside them."""
        self._grpc: Any = None
        self._poller: asyncio.Task[None] | None = None
        self.schedules: Any = None
        self.endpoint_control: EndpointControl | None = None

    async def start(self) -> None:
        mode = self.settings.control_mode()
        await self.manager.load_all(self.settings.load_models if mode == "explicit" else None)
        if mode == "poll" and self.settings.poll_s > 0:
            self._poller = asyncio.get_running_loop().create_task(
                self.manager.poll(self.settings.poll_s))
        # the startup heap (modules, models) never becomes garbage: keep it out of the
        # collector's full passes, which otherwise rescan it while requests wait
        gc.collect()
        gc.freeze()
        router = build_router(self.dataplane, self.metrics, self.settings.max_body_bytes)
        self.router = router
        await self._start_endpoints(router)
        from ferry.protocols.prediction_routes import add_routes as add_prediction_routes
        add_prediction_routes(router, self.settings.predictions_url)
        if self.store is not None:
            self.store.register(self.manager.models)
            self.store.writer.start()
            add_store_routes(router, self.store, self.metrics,
                             lambda m: self.manager.get(m).version,
                             lambda r: self.dataplane.authorize_control(
                                 r.headers.get("authorization"), r.client))
            if self.settings.alerts_interval_s:
                self.alerts = AlertLoop(self.store, self.metrics, self.settings.alerts_interval_s)
                self.alerts.start()
        self._http, self._http_state = await serve_http(
            router, self.settings.host, self.settings.http_port,
            HttpLimits.from_settings(self.settings), self.metrics)
        self.http_port = self._http.sockets[0].getsockname()[1]
        ready = sum(h.ready for m in self.manager.models.values() for h in m.versions.values())
        total = sum(len(m.versions) for m in self.manager.models.values())
        log.info("serving %d model(s), %d/%d version(s) ready, from %s",
                 len(self.manager.models), ready, total, self.settings.repository)
        if self.settings.grpc_port >= 0:
            from ferry.protocols.grpc import serve_grpc

            self._grpc, self.grpc_port = await serve_grpc(
                self.dataplane, self.settings.host, self.settings.grpc_port,
                self.settings.max_body_bytes)
            _announce(f"ferry: gRPC listening on {self.settings.host}:{self.grpc_port}")
        schedules = self.settings.schedules_store()
        if schedules is not None:
            from ferry.batch.schedules import SchedulerThread

            self.schedules = SchedulerThread(schedules, self.settings.schedules_poll_s,
                                             self.metrics.registry)
            self.schedules.start()
        # tests and scripts read this line to find the port when http_port is 0
        _announce(f"ferry: HTTP listening on http://{self.settings.host}:{self.http_port}")

    async def _start_endpoints(self, router: Router) -> None:
        """Endpoint policies from the store (or in memory with ``--store none``), their
        routes, and the poll that follows other servers' changes."""
        endpoint_store = None
        if self.store is not None:
            from ferry.errors import StoreUnavailable
            from ferry.evalstore.endpoints import EndpointStore
            from ferry.evalstore.schema import open_engine

            loop = asyncio.get_running_loop()
            try:
                engine = await loop.run_in_executor(None, open_engine, self.settings.store)
            except StoreUnavailable as exc:  # polls retry; the writer migrates when it can
                log.warning("endpoint policies: %s", exc.message)
                engine = open_engine(self.settings.store, migrate=False)
            endpoint_store = EndpointStore(engine)
        self.endpoint_control = EndpointControl(self.dataplane.endpoints, endpoint_store,
                                                self.settings.endpoint_poll_s)
        await self.endpoint_control.start()
        add_endpoint_routes(router, self.endpoint_control, lambda r: self.dataplane
                            .authorize_control(r.headers.get("authorization"), r.client))

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self.endpoint_control is not None:
            await self.endpoint_control.stop()
        if self.schedules is not None:  # no new batch runs; the running ones go on
            await asyncio.get_running_loop().run_in_executor(None, self.schedules.stop)
        if self._grpc is not None:
            await self._grpc.stop(grace=10)
        if self._http is not None and self._http_state is not None:
            # running requests are cancelled at the deadline, before the models unload
            await drain(self._http, self._http_state, self.settings.drain_timeout_s)
        if self.alerts is not None:
            await self.alerts.stop()
        if self.store is not None:  # flush every buffered prediction before exiting
            await asyncio.get_running_loop().run_in_executor(None, self.store.writer.stop)
        self.dataplane.shared_memory.close()
        await self.manager.close()
        log.info("stopped")

    async def serve_until_signalled(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
        await self.stop()


def run(settings: ServerSettings) -> None:
    """Serve until SIGINT or SIGTERM."""
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = FerryServer(settings)
    except FerryError as exc:  # a missing extra, an unusable setting: one line, no traceback
        log.error("cannot serve: %s", exc.message)
        raise SystemExit(1) from None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(server.serve_until_signalled())
    except OSError as exc:  # a port in use, an unreachable repository at start
        log.error("cannot serve: %s", exc)
        raise SystemExit(1) from None


def _announce(line: str) -> None:
    """One write of the whole line: ``print`` writes the text and the newline separately, and
    a log record from another thread (the store's writer) could land between them."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
