"""``ferry batch MODEL --input ... --output ...`` and ``ferry batch runs``."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import click

from ferry.cli._options import repository_option, resolve_repository

_EPILOG = """Examples:

\b
  ferry batch fraud --input transactions.parquet --output sqlite:///preds.db \\
      --table fraud_scores --key txn_id
  ferry batch fraud --input 'data/*.csv' --output preds.parquet --workers 2
  ferry batch fraud --input 'postgresql://host/db?table=transactions' \\
      --output 'postgresql://host/db?table=fraud_scores' --key txn_id
  ferry batch tabular --input rows.parquet --output out.parquet --map 'input=f{i}'
  ferry batch fraud --input 's3://bucket/day=2026-11-20/' --output s3://bucket/scores/ \\
      --key txn_id
  ferry batch fraud --input 'day=2026-11-20/*.parquet' --output preds.parquet \\
      --engine ray --ray-address auto
  ferry batch --resume 20261121-020000-1a2b3c4d
  ferry batch runs
"""


class _BatchGroup(click.Group):
    """``ferry batch MODEL ...`` scores; ``ferry batch runs`` lists runs."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["score", *args]
        elif not args:
            args = ["--help"]
        return super().parse_args(ctx, args)


@click.group(cls=_BatchGroup, epilog=_EPILOG)
def batch() -> None:
    """Score files or tables with a model from the repository into files or a database."""


def _store_option(func: Any) -> Any:
    return click.option("--store", envvar="FERRY_BATCH_STORE", default=None,
                        help="Run-record store: the database of batch runs and schedules, "
                             "not the evaluation store (env FERRY_BATCH_STORE, else "
                             "FERRY_STORE as `ferry serve` does; default sqlite:///ferry.db).")(func)


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@batch.command("score", epilog=_EPILOG)
@click.argument("model", required=False)
@click.option("--input", "input_", metavar="PATH|GLOB|URL",
              help="Parquet, CSV or JSON Lines file(s), a folder, or a glob, local or on "
                   "object storage (s3://bucket/day=1/), or a database URL (?table=NAME).")
@click.option("--output", metavar="PATH|URL",
              help="A .parquet or .csv file, a folder of part files (preds/), either one "
                   "local or on object storage (s3://bucket/scores/), or a database URL "
                   "(sqlite:///x.db, postgresql://...).")
@click.option("--table", help="Output table (or add ?table= to the output URL).")
@click.option("--input-table", help="Input table, for a database --input without ?table=.")
@click.option("--key", "keys", multiple=True, help="Key column(s) to keep and index (repeat or "
                                                   "comma-separate).")
@click.option("--passthrough", multiple=True, help="Other input columns to copy to the output.")
@click.option("--map", "maps", multiple=True, metavar="NAME=COLUMN",
              help="Read a feature/input from another column; 'input=f{i}' or 'input=a,b,c' "
                   "for a [-1,k] input.")
@click.option("--version", "version", type=int, help="Model version (default: the newest live).")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Scoring processes, one core each (default 1); with --engine ray, actors "
                   "(default: one per CPU of the Ray cluster).")
@click.option("--chunk-rows", type=click.IntRange(1), default=65536, show_default=True,
              help="Rows per chunk: the unit of progress and resume.")
@click.option("--batch-rows", type=click.IntRange(1), help="Rows per model call (default: "
                                                            "chosen from the input width).")
@click.option("--rejects", help="Where rejected rows go (file, or table in the output "
                                "database). Default: beside the output.")
@click.option("--max-reject-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Fail the run when more than this share of rows is rejected.")
@click.option("--mode", type=click.Choice(["replace", "append"]), default="replace",
              show_default=True, help="Database output: swap the table in, or append rows.")
@click.option("--checkpoint-s", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds between durable checkpoints (what --resume can skip).")
@click.option("--input-format", type=click.Choice(["parquet", "csv", "jsonl"]))
@click.option("--output-format", type=click.Choice(["parquet", "csv"]))
@click.option("--trust-pickles", is_flag=True, envvar="FERRY_TRUST_PICKLES",
              help="Also load pickle/joblib models (this runs code from them).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Score on this machine, or on Ray Data (pip install "
                                      "'ferry[ray]'; Parquet inputs).")
@click.option("--ray-address", metavar="ADDRESS", help="Ray cluster to use with --engine ray "
                                                       "(auto, ray://host:10001); default: "
                                                       "start a local Ray.")
@click.option("--resume", metavar="RUN_ID", help="Continue a failed or interrupted run.")
@click.option("--run-id", hidden=True)
@click.option("--schedule", hidden=True, help="Set by the scheduler.")
@click.option("--pin-workers/--no-pin-workers", default=None,
              help="Pin worker i to CPU i. Default: pin when there are no more workers than "
                   "CPUs this process may use (measured ~4 % faster with --workers 2 on 2 "
                   "cores). Example: --workers 2 --no-pin-workers")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress output (default: a live bar on a terminal, else a plain "
                   "'progress:' line every 5 s or 10 % of the rows on stderr).")
@repository_option
@_store_option
def score(model: str | None, input_: str | None, output: str | None, table: str | None,
          input_table: str | None, keys: tuple[str, ...], passthrough: tuple[str, ...],
          maps: tuple[str, ...], version: int | None, workers: int | None, chunk_rows: int,
          batch_rows: int | None, checkpoint_s: float, rejects: str | None,
          max_reject_rate: float, mode: str,
          input_format: str | None, output_format: str | None, trust_pickles: bool,
          engine: str, ray_address: str | None, resume: str | None, run_id: str | None,
          schedule: str | None,
          pin_workers: bool | None, quiet: bool, repository: str | None, store: str | None) -> None:
    """Score MODEL over --input and write predictions to --output."""
    from ferry.batch.job import BatchJob, parse_input, parse_output
    from ferry.batch.local import RunFailed, run
    from ferry.batch.records import RunStore
    from ferry.cli._progress import progress_display
    from ferry.errors import FerryError

    job = None
    try:
        if not resume:
            if not (model and input_ and output):
                raise click.UsageError("give MODEL, --input and --output (or --resume RUN_ID)")
            mapping = {}
            for item in maps:
                name, eq, column = item.partition("=")
                if not eq or not name or not column:
                    raise click.BadParameter(f"{item!r}: use NAME=COLUMN", param_hint="--map")
                mapping[name.strip()] = column.strip()
            job = BatchJob(
                model=model, input=parse_input(input_, input_format, input_table),
                output=parse_output(output, output_format, table),
                repository=str(resolve_repository(repository)), version=version,
                keys=_split(keys), passthrough=_split(passthrough), mapping=mapping, mode=mode,
                rejects=rejects, max_reject_rate=max_reject_rate, chunk_rows=chunk_rows,
                batch_rows=batch_rows, checkpoint_s=checkpoint_s,
                workers=workers or (0 if engine == "ray" else 1), engine=engine,
                ray_address=ray_address, trust_pickles=trust_pickles,
                schedule=schedule)
        runs = RunStore(store)
    except FerryError as exc:
        raise click.ClickException(exc.message) from None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    earlier = runs.get_run(resume) if resume else None
    progress = progress_display(quiet, earlier.rows_in if earlier else 0)
    try:
        summary = run(job, runs, resume=resume, progress=progress, run_id=run_id,  # type: ignore[arg-type]
                      pin_workers=pin_workers)
    except RunFailed as exc:
        if progress:
            progress.end()
            progress = None
        click.echo(f"ferry batch: {exc.message}", err=True)
        sys.exit(130 if exc.summary.status == "interrupted" else 1)
    except FerryError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        if progress:
            progress.end()
        signal.signal(signal.SIGTERM, previous)
        runs.close()
    rate = summary.rows_in / summary.seconds if summary.seconds else 0.0
    click.echo(f"run {summary.run_id} succeeded: {summary.model} v{summary.version}, "
               f"{summary.rows_in} rows in, {summary.rows_out} out, {summary.rows_rejected} "
               f"rejected, {summary.seconds:.2f} s ({rate:,.0f} rows/s) -> {summary.output}"
               + (f" (Ray start and stop: {summary.engine_s:.2f} s)" if summary.engine_s else ""))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@batch.command("runs", epilog="""Examples:

\b
  ferry batch runs
  ferry batch runs --model fraud --limit 50 --format json
""")
@click.option("--model", help="Only runs of this model.")
@click.option("--schedule", help="Only runs started by this schedule.")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@_store_option
def runs_command(model: str | None, schedule: str | None, limit: int, fmt: str,
                 store: str | None) -> None:
    """List recent batch runs: model, version, status, rows, rejects, duration, error."""
    from ferry.batch.records import RunStore

    runs = RunStore(store)
    try:
        records = runs.list_runs(limit, model=model, schedule=schedule)
    finally:
        runs.close()
    if fmt == "json":
        click.echo(json.dumps([{
            "run_id": r.run_id, "model": r.model, "version": r.version, "status": r.status,
            "input": r.input, "output": r.output, "rows_in": r.rows_in, "rows_out": r.rows_out,
            "rows_rejected": r.rows_rejected, "chunks_done": r.chunks_done,
            "started_at": r.started_at.isoformat(),
            "ended_at": r.ended_at.isoformat() if r.ended_at else None,
            "seconds": round(r.seconds, 3), "schedule": r.schedule, "error": r.error}
            for r in records], indent=2))
        return
    if not records:
        click.echo("no runs yet")
        return
    click.echo(f"{'run id':26} {'model':14} {'ver':>4} {'status':11} {'rows in':>11} "
               f"{'rejected':>9} {'seconds':>8}  started (UTC)")
    for r in records:
        click.echo(f"{r.run_id:26} {r.model[:14]:14} {r.version or '-':>4} {r.status:11} "
                   f"{r.rows_in:>11,} {r.rows_rejected:>9,} {r.seconds:>8.1f}  "
                   f"{r.started_at:%Y-%m-%d %H:%M:%S}")
        if r.error:
            click.echo(f"    error: {r.error}")
