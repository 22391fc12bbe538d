"""``ferry rollout MODEL pin|split|status`` and ``ferry rollback MODEL``: an endpoint's
routing policy, through a running server's ``/ferry/v1/endpoints`` API."""

from __future__ import annotations

import datetime
import json
import urllib.parse
from typing import Any

import click

from ferry.cli._http import call
from ferry.cli._options import admin_token_option, url_option

_ACTIONS = ("pin", "split", "status")


def _reason(func: Any) -> Any:
    return click.option("--reason", default=None,
                        help="Why: kept in the endpoint's event history.")(func)


def _endpoint_url(url: str, model: str, tail: str = "") -> str:
    return f"{url.rstrip('/')}/ferry/v1/endpoints/{urllib.parse.quote(model, safe='')}{tail}"


def parse_weights(pairs: tuple[str, ...]) -> dict[str, float]:
    """``("2=90", "3=10")`` -> ``{"2": 90.0, "3": 10.0}`` (the server validates them)."""
    weights: dict[str, float] = {}
    for pair in pairs:
        version, sep, weight = pair.partition("=")
        if not sep or not version.strip().isdigit():
            raise click.BadParameter(f"{pair!r} is not VERSION=WEIGHT (like 2=90)",
                                     param_hint="ARGS")
        try:
            weights[version.strip()] = float(weight)
        except ValueError:
            raise click.BadParameter(f"weight {weight!r} in {pair!r} is not a number",
                                     param_hint="ARGS") from None
    return weights


def _show(status: dict[str, Any], events: list[dict[str, Any]] | None = None) -> None:
    shares = ", ".join(f"v{v} {s * 100:.4g}%" for v, s in status["shares"].items()) or "none"
    stable = status["stable"]
    stable_text = "pin " + ("latest" if stable.get("version") is None else
                            str(stable["version"])) if stable["kind"] == "pin" else "split"
    click.echo(f"{status['model']}: {status['describe']} (revision {status['revision']})")
    click.echo(f"  traffic now: {shares}")
    click.echo(f"  live versions: {status['live_versions']}, latest {status['latest']}; "
               f"rollback goes to: {stable_text}")
    for note in status.get("notes") or ():
        click.echo(f"  note: {note}")
    for event in events or ():
        when = datetime.datetime.fromtimestamp(event["ts"]).isoformat(" ", "seconds")
        what = event["policy"] or {}
        click.echo(f"  {when}  {event['action']:<12} {json.dumps(what)}  by {event['actor']}"
                   + (f" from {event['client']}" if event.get("client") else "")
                   + (f": {event['reason']}" if event.get("reason") else ""))


@click.command(epilog="""Examples:

\b
  ferry rollout fraud split 2=90 3=10 --sticky-header x-user-id
  ferry rollout fraud pin 3
  ferry rollout fraud pin latest
  ferry rollout fraud status
""")
@click.argument("model")
@click.argument("action", type=click.Choice(_ACTIONS))
@click.argument("args", nargs=-1)
@click.option("--sticky-header", default=None,
              help="split: route by a hash of this request header (gRPC: metadata key), so a "
                   "key keeps its version while the weights stay the same.")
@_reason
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@url_option
@admin_token_option
def rollout(model: str, action: str, args: tuple[str, ...], sticky_header: str | None,
            reason: str | None, fmt: str, url: str, admin_token: str | None) -> None:
    """Route MODEL's traffic: `pin VERSION|latest` sends every request to one version,
    `split V=W ...` shares it by weight (normalised), `status` shows the policy, the shares
    and the history. Requests that name a version bypass the policy."""
    body: dict[str, Any]
    if action == "status":
        if args:
            raise click.UsageError("status takes no arguments")
        status = call("GET", _endpoint_url(url, model), token=admin_token)
        events = call("GET", _endpoint_url(url, model, "/events?limit=10"), token=admin_token)
        if fmt == "json":
            click.echo(json.dumps({**status, "events": events}, indent=2))
        else:
            _show(status, events)
        return
    if action == "pin":
        if len(args) != 1 or not (args[0].isdigit() or args[0] == "latest"):
            raise click.UsageError("pin takes one VERSION (a number) or 'latest'")
        body = {"kind": "pin", "version": None if args[0] == "latest" else int(args[0])}
    else:
        if not args:
            raise click.UsageError("split takes VERSION=WEIGHT pairs, like 2=90 3=10")
        body = {"kind": "split", "weights": parse_weights(args),
                "sticky_header": sticky_header}
    if reason:
        body["reason"] = reason
    status = call("PUT", _endpoint_url(url, model), token=admin_token, body=body)
    if fmt == "json":
        click.echo(json.dumps(status, indent=2))
    else:
        _show(status)


@click.command(epilog="""Examples:

\b
  ferry rollback fraud
  ferry rollback fraud --reason "p99 doubled" --url http://10.0.0.5:8000
""")
@click.argument("model")
@_reason
@url_option
@admin_token_option
def rollback(model: str, reason: str | None, url: str, admin_token: str | None) -> None:
    """Send MODEL's traffic back to its last stable policy (the pin in force before the
    current policy), from the next request on."""
    status = call("POST", _endpoint_url(url, model, "/rollback"),
                  {"reason": reason} if reason else {}, token=admin_token)
    _show(status)
