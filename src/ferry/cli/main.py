"""The ``ferry`` click group. Subcommands load lazily so ``ferry --help`` starts fast.

Conventions every command follows: commands that read a repository take ``--repository``
(env ``FERRY_REPOSITORY``, default the bundled examples); commands that talk to a server
take ``--url`` (env ``FERRY_URL``, default ``http://127.0.0.1:8000``) and, where the call
needs it, ``--admin-token`` (env ``FERRY_ADMIN_TOKEN``); ``--store`` is the evaluation store
(env ``FERRY_STORE``) except on ``batch``/``schedule``/``scheduler``, where it is the
run-record store (env ``FERRY_BATCH_STORE``, else ``FERRY_STORE``). A configured feature
whose extra is missing fails at start with one line naming it (``ferry._extras``).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

_COMMANDS = {
    "serve": ("ferry.cli.serve", "serve", "Serve a model repository over HTTP."),
    "models": ("ferry.cli.models", "models", "List models, versions, runtimes and signatures."),
    "predict": ("ferry.cli.predict", "predict", "Send one inference request to a server."),
    "monitor": ("ferry.cli.monitor", "monitor", "Drift, data quality and performance of a "
                "model over a window."),
    "export": ("ferry.cli.export", "export", "Export logged predictions and feedback to "
               "Parquet."),
    "reference": ("ferry.cli.reference", "reference", "Register reference data for drift."),
    "feedback": ("ferry.cli.feedback", "feedback", "Attach a label or reward to a prediction."),
    "rollout": ("ferry.cli.rollout", "rollout", "Route a model's traffic: pin, split, "
                "status."),
    "rollback": ("ferry.cli.rollout", "rollback", "Send a model's traffic back to its "
                 "last stable policy."),
    "batch": ("ferry.cli.batch", "batch", "Score files or tables into files or a database."),
    "schedule": ("ferry.cli.schedule", "schedule", "Add, list and remove batch schedules."),
    "scheduler": ("ferry.cli.schedule", "scheduler", "Run due batch schedules (a process)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """A ``FerryError`` a command did not turn into its own message (a missing extra, an
        unreachable store) ends it with one ``Error:`` line and exit 1, not a traceback."""
        from ferry.errors import FerryError

        try:
            return super().invoke(ctx)
        except FerryError as exc:
            raise click.ClickException(exc.message) from None

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        rows = [(name, help_text) for name, (_, _, help_text) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ferry")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.1.0"


@click.group(cls=LazyGroup, epilog="Example:\n\n  ferry serve ./models --http-port 8000")
@click.version_option(_version(), "--version", prog_name="ferry")
def cli() -> None:
    """Ferry: serve trained models fast, over the KServe V2 and TF Serving protocols."""


def main() -> None:
    cli(auto_envvar_prefix="FERRY")
