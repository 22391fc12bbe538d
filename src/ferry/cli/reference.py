"""``ferry reference MODEL FILE``: register reference data (training or validation sample)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import click

from ferry.cli._http import call
from ferry.cli._options import admin_token_option, url_option


@click.command(epilog="""Examples:

\b
  ferry reference iris train_sample.parquet            # the latest live version
  ferry reference iris validation.csv --version 2 --url http://127.0.0.1:8000
  ferry reference iris train.parquet --url http://models:8000 --admin-token "$TOKEN"
""")
@click.argument("model")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--version", "version", type=int, default=None,
              help="The version it belongs to (default: the latest live one).")
@url_option
@admin_token_option
def reference(model: str, file: str, version: int | None, url: str,
              admin_token: str | None) -> None:
    """Send FILE (Parquet or CSV whose columns are MODEL's features) to the server, which
    checks it against the signature and stores its profile as the drift reference."""
    path = Path(file)
    ctype = "text/csv" if path.suffix.lower() == ".csv" else "application/vnd.apache.parquet"
    where = f"/ferry/v1/models/{urllib.parse.quote(model)}" + (
        f"/versions/{version}" if version else "") + "/reference?" + urllib.parse.urlencode(
        {"source": path.name})
    result = call("PUT", url.rstrip("/") + where, data=path.read_bytes(), content_type=ctype,
                  token=admin_token, timeout=300)
    click.echo(f"{result['model']} v{result['version']}: reference of {result['rows']} rows, "
               f"{len(result['features'])} feature(s) from {result['source']}")
