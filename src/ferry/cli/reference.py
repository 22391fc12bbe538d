"""``ferry reference MODEL FILE``: register reference data (training or validation sample)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import click

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
    headers = {"Content-Type": ctype}
    if admin_token:
        headers["Authorization"] = f"Bearer {admin_token}"
    request = urllib.request.Request(url.rstrip("/") + where, data=path.read_bytes(),
                                     method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            result = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise click.ClickException(f"{exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None
    click.echo(f"{result['model']} v{result['version']}: reference of {result['rows']} rows, "
               f"{len(result['features'])} feature(s) from {result['source']}")
