"""``GET /ferry/v1/predictions/{table}/{key}``: a stored batch prediction by key, over
``batch.predictions`` (the database in ``FERRY_PREDICTIONS_URL``)."""

from __future__ import annotations

from ferry.batch.predictions import PredictionStore, lookup
from ferry.protocols import schemas as S
from ferry.protocols.router import Request, Response, RouteDoc, Router, json_response


def add_routes(router: Router, predictions_url: str | None) -> None:
    """Register the predictions route on the server's router."""
    store = PredictionStore(predictions_url) if predictions_url else None

    async def prediction(request: Request) -> Response:
        return json_response(await lookup(store, request.params["table"],
                                          request.params["key"]))

    router.add("GET", "/ferry/v1/predictions/{table}/{key}", prediction, RouteDoc(
        "A stored batch prediction by key, with run id and age (FERRY_PREDICTIONS_URL)",
        S.PREDICTION, tag="batch"))
