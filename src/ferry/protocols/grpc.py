"""The KServe V2 ``inference.GRPCInferenceService`` (plus Triton's repository RPCs) on
``grpc.aio``, over the protocol-neutral dataplane.

The servicer only translates; one interceptor turns every ``FerryError`` from any method
into a gRPC status (derived from its HTTP status, so the two protocols agree), so no RPC can
be missed. RPCs Ferry does not serve (CUDA shared memory, tracing, ...) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format

from ferry.errors import FerryError, RegionExists, RepositoryError, ServerBusy
from ferry.protocols import grpc_codec
from ferry._pb import grpc_service_pb2 as pb
from ferry._pb import model_config_pb2 as mc
from ferry._pb import grpc_service_pb2_grpc as pb_grpc
from ferry.protocols.dataplane import DataPlane
from ferry.protocols.identity import (REQUEST_ID_HEADER, TRACEPARENT_HEADER,
                                      X_REQUEST_ID_HEADER, log_traceparent, request_id)

log = logging.getLogger("ferry.grpc")

_BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(exc: FerryError) -> grpc.StatusCode:
    """The gRPC status for a Ferry error (a full queue is RESOURCE_EXHAUSTED)."""
    if isinstance(exc, ServerBusy):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, RegionExists):  # as Triton answers it
        return grpc.StatusCode.ALREADY_EXISTS
    return _BY_HTTP_STATUS.get(exc.http_status, grpc.StatusCode.INTERNAL)


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every unary method: ``FerryError`` -> its status, anything else -> INTERNAL."""

    async def intercept_service(self, continuation: Callable[..., Awaitable[Any]],
                                details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except FerryError as exc:
                await context.abort(status_code(exc), exc.message)
            except grpc.aio.AbortError:
                raise
            except NotImplementedError:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                    f"{details.method} is not served by Ferry")
            except Exception as exc:
                log.exception("unhandled error in %s", details.method)
                await context.abort(grpc.StatusCode.INTERNAL,
                                    f"internal error: {type(exc).__name__}: {exc}")

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _peer_host(peer: str) -> str | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the address."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return None


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return str(v)
    return None


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Each method: message -> dataplane call -> message."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        ready = self.dataplane.model_ready(request.name, grpc_codec.version_of(request.version))
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        meta = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"],
                                         extensions=meta["extensions"])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        meta = self.dataplane.model_metadata(request.name, grpc_codec.version_of(request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                    for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                     for t in meta["outputs"]])

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        shm = self.dataplane.shared_memory
        decoded = grpc_codec.decode_infer(request, shm)
        # one dict of the metadata: the id headers, and routing policies read it (sticky key)
        decoded.headers = meta = dict(context.invocation_metadata() or ())
        x_id = meta.get(X_REQUEST_ID_HEADER)
        traceparent = meta.get(TRACEPARENT_HEADER)
        decoded.id = rid = request_id(meta.get(REQUEST_ID_HEADER), x_id, decoded.id)
        if traceparent is not None:
            log_traceparent(traceparent, rid, decoded.model.name)
        # sent before the inference runs, so a failed request's status carries it too
        returned: tuple[tuple[str, str], ...] = ((REQUEST_ID_HEADER, rid),)
        if x_id is not None:
            returned += ((X_REQUEST_ID_HEADER, x_id),)
        await context.send_initial_metadata(returned)
        timeout_us = (decoded.parameters or {}).get("timeout")
        remaining = context.time_remaining()
        if isinstance(timeout_us, int) and timeout_us > 0:
            decoded.deadline = time.monotonic() + timeout_us / 1e6
        elif remaining is not None:
            decoded.deadline = time.monotonic() + remaining
        leases = shm.lease_outputs(decoded.outputs) if decoded.outputs else None
        if leases is None:
            return grpc_codec.encode_infer(await self.dataplane.infer(decoded))
        try:  # outputs go into shared memory regions, held until written
            response = await self.dataplane.infer(decoded)
            shm.write_outputs(leases, response.outputs)
        finally:
            shm.release(leases)
        return grpc_codec.encode_infer(response, decoded)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        index = self.dataplane.repository_index(request.ready)
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index])

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.dataplane.authorize_control(_metadata(context, "authorization"),
                                         _peer_host(context.peer()))
        name, config = request.model_name, None
        for key, value in request.parameters.items():
            if key != "config":
                raise RepositoryError(f"failed to load {name!r}: load parameter {key!r} is "
                                      f"not supported; Ferry takes 'config' (a "
                                      f"configuration override)")
            if value.WhichOneof("parameter_choice") != "string_param":
                raise RepositoryError(f"failed to load {name!r}: parameters['config'] must "
                                      f"be a string_param holding the model configuration "
                                      f"as JSON")
            config = value.string_param
        await self.dataplane.load_model(name, config)
        return pb.RepositoryModelLoadResponse()

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        stats = self.dataplane.statistics(request.name or None,
                                          grpc_codec.version_of(request.version))
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        config = self.dataplane.model_config(request.name,
                                             grpc_codec.version_of(request.version))
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, mc.ModelConfig()))

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.dataplane.authorize_control(_metadata(context, "authorization"),
                                         _peer_host(context.peer()))
        await self.dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- system shared memory (Triton's extension) -----------------------------------------
    def _authorize_shm(self, context: Any) -> None:
        self.dataplane.shared_memory.authorize(_peer_host(context.peer()),
                                               _metadata(context, "authorization"))

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize_shm(context)
        self.dataplane.shared_memory.register(request.name, request.key, request.offset,
                                              request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize_shm(context)
        self.dataplane.shared_memory.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._authorize_shm(context)
        status = pb.SystemSharedMemoryStatusResponse.RegionStatus
        return pb.SystemSharedMemoryStatusResponse(regions={
            r["name"]: status(**r) for r in self.dataplane.shared_memory.status(request.name)})


async def serve_grpc(dataplane: DataPlane, host: str, port: int, max_message_bytes: int
                     ) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server; returns it and the bound port."""
    server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"gRPC could not bind {host}:{port} (in use? choose --grpc-port, "
                      f"0 for any free port, -1 to turn gRPC off)")
    await server.start()
    return server, bound
