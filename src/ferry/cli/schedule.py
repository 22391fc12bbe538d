"""``ferry schedule add|list|remove`` and ``ferry scheduler`` (the process that runs them)."""

from __future__ import annotations

import click

from ferry.cli.batch import _store_option


@click.group(epilog="""Examples:

\b
  ferry schedule add nightly-fraud --cron '0 2 * * *' -- \\
      batch fraud --input tx.parquet --output sqlite:///preds.db --table fraud_scores --key txn_id
  ferry schedule list
  ferry schedule remove nightly-fraud
""")
def schedule() -> None:
    """Cron schedules for batch runs, kept in the run-record store."""


@schedule.command("add", epilog="""Example:

\b
  ferry schedule add nightly --cron '0 2 * * *' --grace 2h -- batch fraud --input ... --output ...
""")
@click.argument("name")
@click.option("--cron", required=True, help="Five-field cron expression (UTC).")
@click.option("--grace", default="1h", show_default=True,
              help="How late a success may be before the schedule is STALE (s, m, h, d).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_store_option
def add(name: str, cron: str, grace: str, command: tuple[str, ...], store: str | None) -> None:
    """Add schedule NAME running COMMAND (a `ferry batch ...` command line, after --)."""
    from ferry.batch.records import RunStore
    from ferry.batch.schedules import check_cron
    from ferry.errors import FerryError

    argv = list(command)
    if argv[:1] == ["ferry"]:
        argv = argv[1:]
    if argv[:1] != ["batch"] or len(argv) < 2:
        raise click.BadParameter("the command must be a `batch MODEL --input ... --output ...` "
                                 "command line after --", param_hint="COMMAND")
    try:
        check_cron(cron)
        grace_s = _seconds(grace)
    except FerryError as exc:
        raise click.BadParameter(exc.message, param_hint="--cron") from None
    runs = RunStore(store)
    try:
        runs.add_schedule(name, cron, argv, grace_s)
    except KeyError:
        raise click.ClickException(f"schedule {name!r} exists; remove it first") from None
    finally:
        runs.close()
    click.echo(f"schedule {name} added: '{cron}' (UTC), grace {grace}: ferry {' '.join(argv)}")


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use a number of seconds or 30m, 2h, 1d",
                                 param_hint="--grace") from None


@schedule.command("list", epilog="Example:\n\n  ferry schedule list --format json")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@_store_option
def list_(fmt: str, store: str | None) -> None:
    """Each schedule's last run, status, rows, duration, next run, and STALE flag."""
    import json

    from ferry.batch.records import RunStore
    from ferry.batch.schedules import schedule_rows

    runs = RunStore(store)
    try:
        rows = schedule_rows(runs)
    finally:
        runs.close()
    if fmt == "json":
        click.echo(json.dumps([{
            "name": r["name"], "cron": r["cron"], "command": r["argv"],
            "next_run": r["next_run"].isoformat(), "stale": r["stale"],
            "stale_reason": r["stale_reason"],
            "last_run": None if r["last_run"] is None else {
                "run_id": r["last_run"].run_id, "status": r["last_run"].status,
                "rows_in": r["last_run"].rows_in, "rows_rejected": r["last_run"].rows_rejected,
                "seconds": round(r["last_run"].seconds, 3),
                "started_at": r["last_run"].started_at.isoformat()}}
            for r in rows], indent=2))
        return
    if not rows:
        click.echo("no schedules")
        return
    for r in rows:
        last = r["last_run"]
        flag = "STALE" if r["stale"] else "ok"
        last_text = ("never run" if last is None else
                     f"last {last.status} {last.started_at:%Y-%m-%d %H:%M} UTC, "
                     f"{last.rows_in:,} rows, {last.rows_rejected:,} rejected, "
                     f"{last.seconds:.1f} s")
        click.echo(f"{r['name']:20} {flag:5} '{r['cron']}'  {last_text}; next "
                   f"{r['next_run']:%Y-%m-%d %H:%M} UTC")
        if r["stale"]:
            click.echo(f"    STALE: {r['stale_reason']}")


@schedule.command("remove", epilog="Example:\n\n  ferry schedule remove nightly-fraud")
@click.argument("name")
@_store_option
def remove(name: str, store: str | None) -> None:
    """Remove schedule NAME (its run records stay)."""
    from ferry.batch.records import RunStore

    runs = RunStore(store)
    try:
        if not runs.remove_schedule(name):
            raise click.ClickException(f"no schedule {name!r}")
    finally:
        runs.close()
    click.echo(f"schedule {name} removed")


@click.command(epilog="""Examples:

\b
  ferry scheduler                     # run due schedules until stopped
  ferry scheduler --once              # one pass (e.g. from system cron), waits for its runs
  ferry scheduler --metrics-port 9102 # exports ferry_batch_schedule_stale
""")
@click.option("--poll", type=click.FloatRange(0.1), default=15.0, show_default=True,
              help="Seconds between passes.")
@click.option("--once", is_flag=True, help="One pass, wait for the runs it started, exit.")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port.")
@_store_option
def scheduler(poll: float, once: bool, metrics_port: int | None, store: str | None) -> None:
    """Start batch runs when their schedules are due; alert on STALE schedules.

    `ferry serve` runs the same loop by default; run this instead beside servers started
    with --no-schedules (two schedulers on one store never start a fire twice)."""
    import logging

    from ferry.batch.records import RunStore
    from ferry.batch.schedules import Scheduler

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runs = RunStore(store)
    loop = Scheduler(runs, poll, metrics_port)
    try:
        if once:
            loop.tick()
            loop.wait()
        else:
            loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        runs.close()
