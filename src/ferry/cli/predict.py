"""``ferry predict MODEL --data JSON``: one V2 request to a running server."""

from __future__ import annotations

import json
from typing import Any

import click

from ferry.cli._http import call
from ferry.cli._options import url_option


def _call(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """GET ``url``, or POST ``body`` to it."""
    return call("GET" if body is None else "POST", url, body)  # type: ignore[no-any-return]


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def build_request(metadata: dict[str, Any], data: Any) -> dict[str, Any]:
    """A V2 request from nested lists: one value for a single-input model, or an object
    keyed by input name."""
    inputs = metadata["inputs"]
    if not isinstance(data, dict):
        if len(inputs) != 1:
            raise click.BadParameter(f"the model has inputs {[i['name'] for i in inputs]}; "
                                     f"pass an object keyed by input name", param_hint="--data")
        data = {inputs[0]["name"]: data}
    types = {i["name"]: i["datatype"] for i in inputs}
    return {"inputs": [{"name": name, "shape": _shape(value),
                        "datatype": types.get(name, "FP32"), "data": value}
                       for name, value in data.items()]}


@click.command(epilog="""Examples:

\b
  ferry predict iris --data '[[5.1, 3.5, 1.4, 0.2]]'
  ferry predict iris --data @rows.json --version 1 --url http://127.0.0.1:8000
""")
@click.argument("model")
@click.option("--data", required=True,
              help="JSON rows (nested lists, or an object keyed by input name); @FILE reads a "
                   "file.")
@click.option("--version", "version", type=int, default=None, help="A specific version.")
@url_option
def predict(model: str, data: str, version: int | None, url: str) -> None:
    """Send one inference request to MODEL on a running server and print the outputs."""
    if data.startswith("@"):
        try:
            with open(data[1:]) as fh:
                data = fh.read()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {data[1:]}: {exc.strerror}",
                                     param_hint="--data") from None
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--data") from None
    base = url.rstrip("/") + f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    body = build_request(_call(base), value)
    result = _call(base + "/infer", body)
    click.echo(json.dumps({"model_name": result["model_name"],
                           "model_version": result["model_version"],
                           "outputs": {o["name"]: o["data"] for o in result["outputs"]}}))
