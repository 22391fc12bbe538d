"""``ferry export MODEL -o FILE.parquet``: logged predictions (and feedback) for retraining."""

from __future__ import annotations

import click

from ferry.cli._options import existing_store


@click.command(epilog="""Examples:

\b
  ferry export iris --since 7d --with-feedback -o iris.parquet
  ferry export iris --since 1h --version 2 -o last-hour.parquet --store postgresql://ferry@db/ferry
""")
@click.argument("model")
@click.option("--since", default="7d", show_default=True, help="How far back: 1h, 7d, ...")
@click.option("--version", "version", type=int, default=None, help="Only this version.")
@click.option("--with-feedback", is_flag=True, help="Add label and reward columns; keep only "
              "rows that have feedback.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The Parquet file to write.")
@click.option("--store", envvar="FERRY_STORE", default="sqlite:///ferry.db",
              show_default=True, help="Evaluation store URL to read (env FERRY_STORE, the "
              "variable `ferry serve` reads). A SQLite file that does not exist is refused.")
def export(model: str, since: str, version: int | None, with_feedback: bool, output: str,
           store: str) -> None:
    """Write MODEL's logged rows since SINCE as Parquet: feature and prediction columns
    named as monitoring names them, plus request_id, ts, version (and label, reward)."""
    from ferry.errors import FerryError
    from ferry.evalstore.export import export_parquet
    from ferry.evalstore.schema import open_engine
    from ferry.evalstore.windows import parse_duration

    try:
        engine = open_engine(existing_store(store))
        rows = export_parquet(engine, model, parse_duration(since), output, version=version,
                              with_feedback=with_feedback)
    except FerryError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"wrote {rows} row(s) to {output}")
