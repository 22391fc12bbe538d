"""REST routes of endpoints and rollouts, under ``/ferry/v1/endpoints``, over
``routing.control.EndpointControl``:

- ``GET /ferry/v1/endpoints``: every endpoint (served model) with its policy and shares.
- ``GET /ferry/v1/endpoints/{m}``: one endpoint.
- ``PUT /ferry/v1/endpoints/{m}``: set the policy (body: the policy as JSON, with an
  optional ``"reason"``); control call.
- ``POST /ferry/v1/endpoints/{m}/rollback``: back to the stable policy at once (body:
  optional ``{"reason": ...}``); control call.
- ``GET /ferry/v1/endpoints/{m}/events?limit=100``: the history, newest first.

Control calls follow the repository API's rule (``DataPlane.authorize_control``: loopback
or the admin token); the events record who (``admin-token`` or ``loopback``) and the
caller's address. The handlers only translate HTTP to the service's arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


from ferry.errors import InvalidPolicy, MalformedRequest
from ferry.protocols import schemas as S
from ferry.protocols.router import (Param, Request, Response, RouteDoc, Router, json_object,
                                   json_response)
from ferry.routing.control import EndpointControl

_AUTHORIZATION = Param("authorization", "Bearer <admin token> when the server has one; "
                                        "otherwise loopback callers only")


def _json_body(request: Request, required: bool) -> dict[str, Any]:
    if not request.body.strip():
        if required:
            raise InvalidPolicy('the body must be a policy, like {"kind": "split", '
                                '"weights": {"2": 90, "3": 10}}')
        return {}
    return json_object(request.body, InvalidPolicy("the body must be a JSON object"))


def _reason(doc: dict[str, Any]) -> str | None:
    reason = doc.pop("reason", None)
    if reason is not None and not isinstance(reason, str):
        raise InvalidPolicy("reason must be a string")
    return reason[:1000] if reason else None


def add_routes(router: Router, control: EndpointControl,
               authorize: Callable[[Request], str]) -> None:
    """Register the routes; ``authorize(request)`` raises unless the caller may change
    policies and returns who it is."""

    async def list_endpoints(request: Request) -> Response:
        return json_response(control.all())

    async def get_endpoint(request: Request) -> Response:
        return json_response(control.status(request.params["model"]))

    async def put_endpoint(request: Request) -> Response:
        actor = authorize(request)
        doc = _json_body(request, True)
        reason = _reason(doc)
        return json_response(await control.set(request.params["model"], doc, actor,
                                               request.client, reason))

    async def rollback(request: Request) -> Response:
        actor = authorize(request)
        reason = _reason(_json_body(request, False))
        return json_response(await control.rollback(request.params["model"], actor,
                                                     request.client, reason))

    async def events(request: Request) -> Response:
        raw = (request.query_params().get("limit") or ["100"])[0]
        if not raw.isdigit() or not 1 <= int(raw) <= 10000:
            raise MalformedRequest(f"limit must be an integer from 1 to 10000 (got {raw!r})")
        return json_response(await control.events(request.params["model"], int(raw)))

    tag = "endpoints"
    add = router.add
    add("GET", "/ferry/v1/endpoints", list_endpoints, RouteDoc(
        "Every endpoint (model name): its policy, stable policy, live versions and shares",
        S.ENDPOINTS, tag=tag))
    add("GET", "/ferry/v1/endpoints/{model}", get_endpoint, RouteDoc(
        "One endpoint's policy, stable policy, live versions and traffic shares",
        S.ENDPOINT, tag=tag))
    add("PUT", "/ferry/v1/endpoints/{model}", put_endpoint, RouteDoc(
        "Set the endpoint's routing policy (pin or split); control call. A version that is "
        "not live is rejected with the live ones; weights are normalised (notes say so)",
        S.ENDPOINT, S.POLICY_REQUEST, headers=(_AUTHORIZATION,), tag=tag))
    add("POST", "/ferry/v1/endpoints/{model}/rollback", rollback, RouteDoc(
        "Back to the last stable policy, from the next request on; control call",
        S.ENDPOINT, S.ROLLBACK_REQUEST, request_required=False, headers=(_AUTHORIZATION,),
        tag=tag))
    add("GET", "/ferry/v1/endpoints/{model}/events", events, RouteDoc(
        "The endpoint's policy changes, newest first: what, why, by whom, from where",
        S.ENDPOINT_EVENTS, query=(Param("limit", "at most this many (default 100)",
                                        {"type": "integer", "minimum": 1}),), tag=tag))
