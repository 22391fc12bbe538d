"""``ferry models``: what a repository holds, without starting a server."""

from __future__ import annotations

import json

import click

from ferry.cli._options import repository_option, resolve_repository


@click.command(epilog="""Examples:

\b
  ferry models
  ferry models --repository ./models --format json
""")
@repository_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--trust-pickles", is_flag=True, envvar="FERRY_TRUST_PICKLES",
              help="Also load pickle/joblib models (env FERRY_TRUST_PICKLES).")
def models(repository: str | None, fmt: str, trust_pickles: bool) -> None:
    """List models, versions, runtimes and signatures by loading each aspired version."""
    from ferry.repository.inspect import inspect_repository

    root = resolve_repository(repository)
    if not root.is_dir():
        raise click.BadParameter(f"{root} is not a folder", param_hint="--repository")
    rows = inspect_repository(root, trust_pickles)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        status = row["state"] + (f" ({row['reason']})" if row["reason"] else "")
        click.echo(f"{row['model']}  v{row['version']}  {row['runtime'] or '-'}  "
                   f"max_batch_size={row['max_batch_size']}  {status}")
        for kind in ("inputs", "outputs"):
            for t in row[kind]:
                click.echo(f"    {kind[:-1]:6} {t['name']}: {t['datatype']} {t['shape']}")
