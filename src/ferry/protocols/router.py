"""What a route sees and answers, and the router that finds it: ``Request``, ``Response``,
``Router`` (method + path -> handler, each route with its ``RouteDoc``), and the one
translation of ``FerryError`` to HTTP.

Protocol-neutral route modules (REST, the evaluation store's, the predictions route, later the
UI) depend on this module only; the connection handling lives in ``http.py``, and
``openapi.py`` builds ``/openapi.json`` from the routes' docs.

**Mounting an app** (the web UI's seam): ``Router.mount(prefix, handler)`` sends every method
on ``prefix`` and on every path under it to one ``Handler``. An ASGI application plugs in
through an adapter that is itself a ``Handler``: it builds the ASGI ``http`` scope from the
``Request`` (``method``, ``path`` (the whole path), ``root_path`` = the prefix,
``query_string``, ``headers``, ``client``), feeds ``request.body`` as one
``http.request`` message, and gathers ``http.response.start``/``body`` into a ``Response``.
Routes added with ``add`` win over a mount on the same path.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from ferry.errors import (FerryError, MalformedRequest, MethodNotAllowed, NotFound,
                          Unavailable)


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    """Path parameters captured by the route."""
    client: str | None = None
    """The peer's IP address."""

    def query_params(self) -> dict[str, list[str]]:
        return parse_qs(self.query)


@dataclass(slots=True)
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    headers: list[tuple[str, str]] | None = None


def json_object(body: bytes, not_object: FerryError) -> dict[str, Any]:
    """A request body that must be a JSON object: ``MalformedRequest`` when it is not JSON,
    ``not_object`` (saying what shape is wanted) when it is JSON but not an object."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise not_object
    return doc


def json_response(value: object, status: int = 200) -> Response:
    return Response(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY), status)


def error_response(exc: FerryError) -> Response:
    """The one translation of ``FerryError`` to HTTP."""
    response = json_response({"error": exc.message}, exc.http_status)
    if isinstance(exc, Unavailable) and exc.retry_after is not None:
        response.headers = [("retry-after", str(max(1, round(exc.retry_after))))]
    elif isinstance(exc, MethodNotAllowed) and exc.allowed:
        response.headers = [("allow", ", ".join(exc.allowed))]
    return response


Handler = Callable[[Request], Awaitable[Response]]

JSON = "application/json"
MOUNT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods a mount answers."""


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter or header a route reads (or a response header it sets)."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """What ``/openapi.json`` says about one route. Path parameters come from the path's
    ``{name}`` segments; every route may also answer the error body (``schemas.ERROR``)."""

    summary: str
    response: Mapping[str, Any]
    """JSON Schema of the 200 answer's body (for JSON media types; others are strings)."""
    request: Mapping[str, Any] | None = None
    """JSON Schema of the request body, or None when the route reads no body."""
    response_types: tuple[str, ...] = (JSON,)
    request_types: tuple[str, ...] = (JSON,)
    request_required: bool = True
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    response_headers: tuple[Param, ...] = ()
    also: Mapping[int, str] = field(default_factory=dict)
    """Other statuses answered with the same body as the 200 (e.g. 503 for not ready)."""
    description: str = ""
    tag: str = ""


class Router:
    """Method + path -> handler. Paths are literal or hold ``{name}`` segments.

    ``match`` takes the path as sent, still percent-encoded, and decodes each captured
    segment once: ``/v2/models/a%2Fb/infer`` names the model ``a/b``, and ``%2541`` is ``%41``.
    ``HEAD`` is answered by the ``GET`` handler (the server drops the body); a 405 carries
    the methods the path has in ``MethodNotAllowed.allowed``.
    """

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self._recent: dict[tuple[str, str], tuple[Handler, dict[str, str]]] = {}
        self._docs: dict[tuple[str, str], RouteDoc | None] = {}
        self.mounts: dict[str, Handler] = {}
        """Prefix -> handler, see ``mount``."""

    def add(self, method: str, path: str, handler: Handler, doc: RouteDoc | None = None
            ) -> None:
        """Route ``method path`` to ``handler``; ``doc`` describes it in ``/openapi.json``
        (every route the server registers has one: ``tests/integration/test_openapi.py``)."""
        self._docs[(method, path)] = doc
        if "{" not in path:
            self._exact.setdefault(path, {})[method] = handler
            return
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+?)", re.escape(path)
                                        .replace(r"\{", "{").replace(r"\}", "}")) + "$")
        for pattern, methods in self._patterns:
            if pattern.pattern == regex.pattern:
                methods[method] = handler
                return
        # before the mounts, so that a route wins over a mount whatever the order of calls
        self._patterns.insert(len(self._patterns) - len(self.mounts), (regex, {method: handler}))

    def routes(self) -> list[tuple[str, str, RouteDoc | None]]:
        """``(method, path, doc)`` of every route added (mounts aside), in order."""
        return [(method, path, doc) for (method, path), doc in self._docs.items()]

    def mount(self, prefix: str, handler: Handler) -> None:
        """Send every method (``MOUNT_METHODS``) on ``prefix`` and on every path under it
        (``prefix/...``, not ``prefix-other``) to ``handler``, which sees the whole path in
        ``request.path`` and no path parameters. See "Mounting an app" above."""
        if not prefix.startswith("/") or prefix.endswith("/") or "{" in prefix:
            raise ValueError(f"mount prefix {prefix!r} must start with '/', not end with one, "
                             f"and hold no {{name}} segments")
        if prefix in self.mounts:
            raise ValueError(f"{prefix!r} is already mounted")
        self.mounts[prefix] = handler
        regex = re.compile("^" + re.escape(prefix) + "(?:/.*)?$", re.DOTALL)
        self._patterns.append((regex, dict.fromkeys(MOUNT_METHODS, handler)))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and path parameters (a fresh dict) for a request; ``path`` as sent
        (percent-encoded)."""
        hit = self._recent.get((method, path))
        if hit is not None:
            return hit[0], dict(hit[1])
        handler, params = self._match(method, path)
        if len(self._recent) >= 1024:  # paths repeat (a few models): remember the last ones
            self._recent.clear()
        self._recent[(method, path)] = (handler, params)
        return handler, dict(params)

    def _match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        methods = self._exact.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for pattern, candidates in self._patterns:
                m = pattern.match(path)
                if m is not None:
                    methods, params = candidates, {k: unquote(v) for k, v in m.groupdict().items()}
                    break
        if methods is None:
            raise NotFound(f"no route for {path}")
        handler = methods.get(method)
        if handler is None and method == "HEAD":
            handler = methods.get("GET")
        if handler is None:
            allowed = sorted({*methods, "HEAD"} if "GET" in methods else methods)
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use "
                                   f"{' or '.join(allowed)}", tuple(allowed))
        return handler, params
