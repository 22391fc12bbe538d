"""REST routes of Triton's system shared memory extension, over
``shared_memory.SharedMemoryRegistry``:

- ``POST /v2/systemsharedmemory/region/{name}/register`` with ``{"key", "offset",
  "byte_size"}``;
- ``POST /v2/systemsharedmemory[/region/{name}]/unregister`` (one region, or all);
- ``GET /v2/systemsharedmemory[/region/{name}]/status`` → ``[{name, key, offset,
  byte_size}]``.

Every call is allowed from loopback, or with the admin token (``check_caller``).
"""

from __future__ import annotations


from ferry.errors import MalformedRequest
from ferry.protocols import schemas as S
from ferry.protocols.router import (Param, Request, Response, RouteDoc, Router, json_object,
                                   json_response)
from ferry.protocols.shared_memory import SharedMemoryRegistry

_AUTHORIZATION = Param("authorization", "Bearer <admin token>, for callers not on loopback")
_PREFIX = "/v2/systemsharedmemory"


def add_routes(router: Router, shm: SharedMemoryRegistry) -> None:
    def authorize(request: Request) -> None:
        shm.authorize(request.client, request.headers.get("authorization"))

    async def register(request: Request) -> Response:
        authorize(request)
        doc = json_object(request.body, MalformedRequest(
            'body must be a JSON object like {"key": "/in0", "offset": 0, "byte_size": 128}'))
        shm.register(request.params["name"], doc.get("key"), doc.get("offset", 0),
                     doc.get("byte_size"))
        return json_response({})

    async def unregister(request: Request) -> Response:
        authorize(request)
        shm.unregister(request.params.get("name"))
        return json_response({})

    async def status(request: Request) -> Response:
        authorize(request)
        return json_response(shm.status(request.params.get("name")))

    tag, auth = "KServe V2", (_AUTHORIZATION,)
    router.add("POST", f"{_PREFIX}/region/{{name}}/register", register, RouteDoc(
        "Register a system shared memory region (Triton extension): map part of an existing "
        "POSIX shared memory object", S.EMPTY, S.SHM_REGISTER_REQUEST, headers=auth, tag=tag))
    unregister_doc = RouteDoc(
        "Unregister one system shared memory region, or all; a region in use by an "
        "inference is unmapped when that inference ends", S.EMPTY, headers=auth, tag=tag)
    router.add("POST", f"{_PREFIX}/unregister", unregister, unregister_doc)
    router.add("POST", f"{_PREFIX}/region/{{name}}/unregister", unregister, unregister_doc)
    status_doc = RouteDoc("Registered system shared memory regions (one, or all)",
                          S.SHM_STATUS, headers=auth, tag=tag)
    router.add("GET", f"{_PREFIX}/status", status, status_doc)
    router.add("GET", f"{_PREFIX}/region/{{name}}/status", status, status_doc)
