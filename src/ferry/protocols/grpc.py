"""The KServe V2 ``inference.GRPCInferenceService`` (plus Triton's repository RPCs) on
``grpc.aio``, over the protocol-neutral dataplane.

The servicer only translates; one interceptor turns every ``FerryError`` from any method
into a gRPC status (derived from its HTTP status, so the two protocols agree), so no RPC can
be missed. RPCs Ferry does not serve (shared memory, tracing, ...) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ferry.errors import FerryError, ServerBusy
from ferry.protocols import grpc_codec
from ferry._pb import grpc_service_pb2 as pb
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
        decoded = grpc_codec.decode_infer(request)
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
        return grpc_codec.encode_infer(await self.dataplane.infer(decoded))

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        index = self.dataplane.repository_index(request.ready)
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index])

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.dataplane.authorize_control(_metadata(context, "authorization"),
                                         _peer_host(context.peer()))
        await self.dataplane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.dataplane.authorize_control(_metadata(context, "authorization"),
                                         _peer_host(context.peer()))
        await self.dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()


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
