"""``ferry feedback REQUEST_ID --label L | --reward R``: attach feedback to a prediction."""

from __future__ import annotations

import json

import click

from ferry.cli._options import url_option


@click.command(epilog="""Examples:

\b
  ferry feedback r-17 --label 1
  ferry feedback r-18 --reward 0.5
  ferry feedback --file labels.json        # {"feedback": [{"request_id": ..., "label": ...}]}
""")
@click.argument("request_id", required=False)
@click.option("--label", default=None, help="The true label (JSON value; else a string).")
@click.option("--reward", type=float, default=None, help="A numeric reward.")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A JSON file in the batch form.")
@url_option
def feedback(request_id: str | None, label: str | None, reward: float | None,
             file: str | None, url: str) -> None:
    """Send a label or reward for REQUEST_ID (or a batch from --file) to the server."""
    from ferry.cli.predict import _call

    if file:
        with open(file) as fh:
            body = json.load(fh)
    else:
        if not request_id or (label is None and reward is None):
            raise click.UsageError("give REQUEST_ID and --label or --reward (or --file)")
        body = {"request_id": request_id}
        if label is not None:
            try:
                body["label"] = json.loads(label)
            except ValueError:
                body["label"] = label
        if reward is not None:
            body["reward"] = reward
    result = _call(url.rstrip("/") + "/ferry/v1/feedback", body)
    click.echo(json.dumps(result))
