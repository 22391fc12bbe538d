"""``ferry monitor MODEL``: drift, data quality and performance of a window."""

from __future__ import annotations

import json
import urllib.parse

import click

from ferry.cli._options import existing_store, url_option


@click.command(epilog="""Examples:

\b
  ferry monitor iris --window 1h                      # table, from the server at --url
  ferry monitor iris --window 1d --format json
  ferry monitor iris --window 1h --format html > report.html
  ferry monitor iris --store sqlite:///ferry.db       # read the store directly
""")
@click.argument("model")
@click.option("--window", default="1h", show_default=True,
              help="How far back from now: 30s, 15m, 1h, 7d.")
@click.option("--version", "version", type=int, default=None,
              help="A version (default: the newest one with rows in the window).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]),
              default="table", show_default=True)
@click.option("--store", envvar="FERRY_STORE", default=None,
              help="Read this evaluation store directly instead of asking the server (env "
                   "FERRY_STORE, the variable `ferry serve` reads). A SQLite file that does "
                   "not exist is refused.")
@url_option
def monitor(model: str, window: str, version: int | None, fmt: str, store: str | None,
            url: str) -> None:
    """Print the monitoring report of MODEL over the last WINDOW."""
    from ferry.errors import FerryError
    from ferry.monitoring.render import render_html, render_table

    plots = fmt == "html"
    try:
        if store:
            from ferry.evalstore.schema import open_engine
            from ferry.evalstore.windows import parse_duration
            from ferry.monitoring.report import build_report

            engine = open_engine(existing_store(store))
            report = build_report(engine, model, parse_duration(window), version, None, plots)
        else:
            from ferry.cli.predict import _call

            query = {"window": window, **({"version": version} if version else {}),
                     **({"plots": 1} if plots else {})}
            report = _call(url.rstrip("/") + f"/ferry/v1/models/{urllib.parse.quote(model)}"
                           f"/monitor?" + urllib.parse.urlencode(query))
    except FerryError as exc:
        raise click.ClickException(exc.message) from None
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    elif fmt == "html":
        click.echo(render_html(report))
    else:
        click.echo(render_table(report))
