"""``ferry serve [REPO]``."""

from __future__ import annotations

from typing import Any

import click


@click.command(epilog="""Examples:

\b
  ferry serve                          # the bundled example repository on :8000
  ferry serve ./models --http-port 9000 --host 0.0.0.0
  ferry serve ./models --trust-pickles # also load sklearn joblib/pickle models
  ferry serve s3://bucket/repo --poll 5   # watch object storage for new versions
  ferry serve ./models --model-control explicit --load-model iris
  ferry serve ./models --batch-store sqlite:///runs.db   # run the schedules kept there
  ferry serve ./models --no-schedules  # leave schedules to a `ferry scheduler` process
""")
@click.argument("repo", required=False, type=click.Path(file_okay=False))
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--http-port", type=int, default=None, help="HTTP port (default 8000; 0 = any).")
@click.option("--grpc-port", type=int, default=None,
              help="gRPC port (default 8001; 0 = any, -1 = off).")
@click.option("--poll", "poll_s", type=float, default=None,
              help="Rescan the repository every N seconds; new versions go live by themselves.")
@click.option("--model-control", type=click.Choice(["none", "poll", "explicit"]), default=None,
              help="none: load once; poll: rescan (with --poll); explicit: only --load-model "
                   "at start, then only the repository API.")
@click.option("--load-model", "load_models", multiple=True,
              help="With --model-control explicit: a model to load at start (repeatable).")
@click.option("--admin-token", default=None,
              help="Require 'Authorization: Bearer TOKEN' for load/unload (else loopback only).")
@click.option("--no-model-control-api", "model_control_api", flag_value=False, default=None,
              help="Refuse the repository load/unload API.")
@click.option("--no-shared-memory", "shared_memory", flag_value=False, default=None,
              help="Refuse Triton's system shared memory extension (/v2/systemsharedmemory).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache for versions fetched from object storage (default ~/.cache/ferry).")
@click.option("--trust-pickles", is_flag=True, default=None,
              help="Load pickle/joblib artifacts (this runs code from them).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Logging level (default info).")
@click.option("--keep-alive-s", type=float, default=None,
              help="Close idle HTTP connections after this many seconds (default 75).")
@click.option("--max-body-bytes", type=int, default=None,
              help="Largest request body (default 64 MiB); larger gets 413.")
@click.option("--header-timeout-s", type=float, default=None,
              help="Close a connection whose request line and headers take longer than this "
                   "from their first byte (default 10).")
@click.option("--body-timeout-s", type=float, default=None,
              help="Close a connection whose request body takes longer than this from its "
                   "first byte (default 60).")
@click.option("--send-timeout-s", type=float, default=None,
              help="Close a connection whose client reads nothing for this long (default 60).")
@click.option("--max-header-bytes", type=int, default=None,
              help="Largest request line + headers (default 32 KiB); larger gets 431.")
@click.option("--max-connections", type=int, default=None,
              help="Most open HTTP connections (default 4096); more get 503 and are closed.")
@click.option("--max-pipeline-bytes", type=int, default=None,
              help="Bytes of pipelined requests queued per connection before reading pauses "
                   "(default 1 MiB).")
@click.option("--drain-timeout-s", type=float, default=None,
              help="On shutdown, seconds in-flight requests may finish before they are "
                   "cancelled (default 30).")
@click.option("--alerts-interval-s", type=float, default=None,
              help="Seconds between evaluations of the models' alert rules (default 60; "
                   "0 = off).")
@click.option("--request-timeout-s", type=float, default=None,
              help="Default inference deadline in seconds (default 60; 0 = none).")
@click.option("--store", envvar="FERRY_STORE", default=None,
              help="Evaluation store (env FERRY_STORE): sqlite:///PATH (default "
                   "sqlite:///ferry.db, made absolute and logged at start), "
                   "postgresql://USER@HOST/DB, or none.")
@click.option("--store-sample-rate", type=float, default=None,
              help="Share of inferences recorded in the store (default 1).")
@click.option("--schedules/--no-schedules", default=None,
              help="Run the batch schedules of the run-record store in this server (default "
                   "on; env FERRY_SCHEDULES). E.g. --no-schedules when `ferry scheduler` "
                   "runs them.")
@click.option("--batch-store", default=None,
              help="Run-record store holding the schedules (env FERRY_BATCH_STORE; default: "
                   "the --store URL), e.g. sqlite:///runs.db.")
@click.option("--schedules-poll-s", type=float, default=None,
              help="Seconds between scheduler passes (default 15), e.g. 5.")
def serve(repo: str | None, **options: object) -> None:
    """Serve the model repository REPO (default: the bundled examples) over HTTP.

    Every option can also come from a FERRY_* environment variable (FERRY_HTTP_PORT, ...).
    """
    from pathlib import Path

    from ferry.server import run
    from ferry.settings import ServerSettings

    values: dict[str, Any] = {k: v for k, v in options.items() if v is not None and v != ()}
    if repo is not None:
        values["repository"] = repo
    try:
        settings = ServerSettings(**values)
    except Exception as exc:
        raise click.BadParameter(str(exc)) from None
    if "://" not in settings.repository and not Path(settings.repository).is_dir():
        raise click.BadParameter(f"{settings.repository} is not a folder", param_hint="REPO")
    run(settings)
