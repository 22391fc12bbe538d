"""The protocol-neutral handlers (MLServer's DataPlane idea): REST, gRPC, the UI and batch
scoring call these with ``ferry.types`` values; only this module and the routing targets
it resolves (``ferry.routing``) call the manager. ``infer`` resolves a model name to its
endpoint's target; request ids, observers and the answering version flow through here once
for every protocol.

Promises: every error is a ``FerryError``; ``infer`` counts each request once in the metrics
under its outcome; a model's failure never escapes as anything but ``ModelError``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import ferry
from ferry.errors import Forbidden, ModelNotReady, Unauthorized, VersionNotFound
from ferry.lifecycle.harness import VersionHarness
from ferry.lifecycle.manager import ModelManager, ServedModel
from ferry.monitoring.metrics import Metrics
from ferry.monitoring.stats import model_statistics
from ferry.protocols.model_config import model_config as config_json
from ferry.protocols.model_config import override_settings
from ferry.protocols.shared_memory import SharedMemoryRegistry
from ferry.routing.endpoints import Endpoints
from ferry.routing.target import InferenceObserver, VersionTarget
from ferry.types import InferRequest, InferResponse, Signature

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration",
              "model_repository", "statistics", "system_shared_memory"]


log = logging.getLogger("ferry.dataplane")


@dataclass(frozen=True, slots=True)
class ModelControl:
    """Who may call the repository's load/unload API."""

    enabled: bool = True
    admin_token: str | None = None
    """When set, callers must present it; otherwise only loopback callers are allowed."""


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class DataPlane:
    """Health, metadata, inference and the repository index, for any protocol."""

    def __init__(self, manager: ModelManager, default_timeout_s: float | None = None,
                 control: ModelControl | None = None, metrics: Metrics | None = None,
                 shared_memory: SharedMemoryRegistry | None = None,
                 routing_seed: int | None = None) -> None:
        self.manager = manager
        self.default_timeout_s = default_timeout_s
        self.control = control or ModelControl()
        self.shared_memory = shared_memory or SharedMemoryRegistry(
            admin_token=self.control.admin_token)
        """Registered system shared memory regions (Triton's extension)."""
        self.observers: list[InferenceObserver] = []
        """Told about each inference; see ``InferenceObserver``."""
        self.direct = VersionTarget(manager, self.observers, default_timeout_s)
        """Runs a request on the version it names, or the latest ready one."""
        self.endpoints = Endpoints(manager, self.direct, metrics, routing_seed)
        self.routes = self.endpoints.targets
        """Model name -> its endpoint's policy target (absent: the default ``pin latest``)."""

    # -- health and metadata -------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.manager.ready()

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "ferry", "version": ferry.__version__, "extensions": EXTENSIONS}

    def model_ready(self, name: str, version: int | None = None) -> bool:
        """True if the version (or any version) is live; ``NotFound`` for unknown names."""
        served = self.manager.model(name)
        if version is None:
            return served.latest_ready() is not None
        harness = served.versions.get(version)
        if harness is None:
            self.manager.get(name, version)  # raises VersionNotFound
        return harness is not None and harness.ready

    def model_metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """V2 model metadata, plus Ferry's per-version states under ``ferry``."""
        served = self.manager.model(name)
        harness: VersionHarness | None
        if version is None:
            harness = served.latest_ready() or next(iter(served.versions.values()), None)
        else:
            harness = served.versions.get(version)
            if harness is None:
                self.manager.get(name, version)  # raises VersionNotFound
        signature = harness.signature if harness else Signature((), ())
        versions = sorted(served.versions, reverse=True)
        return {
            "name": name,
            "versions": [str(v) for v in (versions if version is None else [version])],
            "platform": self._platform(harness),
            "inputs": [s.metadata() for s in signature.inputs],
            "outputs": [s.metadata() for s in signature.outputs],
            "ferry": {
                "max_batch_size": harness.max_batch_size if harness else 0,
                "error": served.entry.error,
                "unsupported_config": served.entry.unsupported_config,
                "versions": [self._version_info(served.versions[v]) for v in versions
                             if version is None or v == version],
            },
        }

    @staticmethod
    def _platform(harness: VersionHarness | None) -> str:
        runtime = harness.runtime_name if harness else ""
        return {"onnx": "onnxruntime_onnx", "python": "python"}.get(runtime, runtime)

    @staticmethod
    def _version_info(h: VersionHarness) -> dict[str, Any]:
        return {"version": str(h.version), "state": h.state.value, "reason": h.reason,
                "runtime": h.runtime_name, "sha256": h.sha256,
                "load_seconds": round(h.load_seconds, 4),
                "warmup_seconds": round(h.warmup_seconds, 4)}

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: every model and version with state and reason."""
        index = []
        for name in sorted(set(self.manager.models) | set(self.manager.known_models)):
            served = self.manager.models.get(name)
            if served is None:
                if not ready_only:
                    index.append({"name": name, "version": "", "state": "UNAVAILABLE",
                                  "reason": "not loaded (load it through the repository API)"})
                continue
            if not served.versions and not ready_only:
                index.append({"name": name, "version": "", "state": "UNAVAILABLE",
                              "reason": served.entry.error or "no version to serve"})
            for number in sorted(served.versions):
                h = served.versions[number]
                if ready_only and not h.ready:
                    continue
                index.append({"name": name, "version": str(number), "state": h.state.value,
                              "reason": h.reason})
        return index

    def statistics(self, name: str | None = None, version: int | None = None
                   ) -> list[dict[str, Any]]:
        """Triton's ``model_stats``: every ready version of every model (no name), of one
        model (no version), or one version; ``NotFound`` for an unknown model or version."""
        if name is None:
            harnesses = [h for _, served in sorted(self.manager.models.items())
                         for h in self._ready_versions(served)]
        elif version is None:
            harnesses = self._ready_versions(self.manager.model(name))
        else:
            harnesses = [self._version(self.manager.model(name), version)]
        return [model_statistics(h.model, h.version, h.metrics) for h in harnesses]

    @staticmethod
    def _ready_versions(served: ServedModel) -> list[VersionHarness]:
        return [served.versions[v] for v in sorted(served.versions) if served.versions[v].ready]

    @staticmethod
    def _version(served: ServedModel, version: int) -> VersionHarness:
        harness = served.versions.get(version)
        if harness is None:
            raise VersionNotFound(f"model {served.name!r} has no served version {version}; "
                                  f"served versions: {sorted(served.versions)}")
        return harness

    def model_config(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Triton's model configuration JSON of the version (or the one requests go to)."""
        served = self.manager.model(name)
        if version is not None:
            return config_json(self._version(served, version))
        harness = served.latest_ready() or next(iter(served.versions.values()), None)
        if harness is None:
            raise ModelNotReady(f"model {name!r} has no loaded version"
                                + (f" ({served.entry.error})" if served.entry.error else ""))
        return config_json(harness)

    def signature(self, name: str, version: int | None = None) -> Signature:
        """The signature of the version a request for (name, version) would run on."""
        return self.manager.get(name, version).signature

    # -- model control -------------------------------------------------------------------
    def authorize_control(self, authorization: str | None, client_host: str | None) -> str:
        """Raise ``Forbidden``/``Unauthorized`` unless this caller may load and unload;
        returns who the caller is, for event records: ``admin-token`` or ``loopback``."""
        control = self.control
        if not control.enabled:
            raise Forbidden("model control is disabled on this server (--no-model-control-api)")
        if control.admin_token:
            expected = f"Bearer {control.admin_token}"
            if authorization is None or not hmac.compare_digest(authorization, expected):
                raise Unauthorized("model control needs 'Authorization: Bearer <admin token>'")
            return "admin-token"
        if client_host is None or not _is_loopback(client_host):
            raise Forbidden(f"model control is allowed only from loopback (caller "
                            f"{client_host}); set --admin-token to allow it from elsewhere")
        return "loopback"

    async def load_model(self, name: str, config: str | None = None) -> None:
        """Load or reload a model; ``config`` is a configuration override (Triton's model
        configuration JSON, ``protocols/model_config.py``) for this load."""
        if config is None:
            await self.manager.load_model(name)
            return
        served = self.manager.models.get(name)
        current = served.latest_ready() if served is not None else None
        settings = override_settings(config, name, current)
        await self.manager.load_model(name, settings)

    async def unload_model(self, name: str) -> None:
        await self.manager.unload_model(name)

    # -- inference -----------------------------------------------------------------------
    def infer(self, request: InferRequest) -> Coroutine[Any, Any, InferResponse]:
        """Run one request on its endpoint's target (``routing``): a request that names a
        version, or a model on the default ``pin latest``, takes the plain version target.

        Await it. It returns the target's coroutine rather than awaiting it, so the default
        path costs one dict lookup and no extra frame; to add work around inference, wrap
        a target (``routing/target.py``) instead of adding it here."""
        model = request.model
        if model.version is None:
            target = self.routes.get(model.name)
            if target is not None:
                return target.infer(request)  # type: ignore[return-value]
        return self.direct.infer(request)
