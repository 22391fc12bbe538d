"""What a route sees and answers, and the router that finds it: ``Request``, ``Response``,
``Router`` (method + path -> handler), and the one translation of ``FerryError`` to HTTP.

Protocol-neutral route modules (REST, the evaluation store's, the predictions route, later the
UI) depend on this module only; the connection handling lives in ``http.py``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

import orjson

from ferry.errors import FerryError, MethodNotAllowed, NotFound, Unavailable


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

    def add(self, method: str, path: str, handler: Handler) -> None:
        if "{" not in path:
            self._exact.setdefault(path, {})[method] = handler
            return
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+?)", re.escape(path)
                                        .replace(r"\{", "{").replace(r"\}", "}")) + "$")
        for pattern, methods in self._patterns:
            if pattern.pattern == regex.pattern:
                methods[method] = handler
                return
        self._patterns.append((regex, {method: handler}))

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
