"""Options shared by several commands, so each convention is written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

DEFAULT_URL = "http://127.0.0.1:8000"


def repository_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--repository", "repository", envvar="FERRY_REPOSITORY",
                        type=click.Path(file_okay=False), default=None,
                        help="Model repository folder (env FERRY_REPOSITORY; default: the "
                             "bundled examples).")(func)


def url_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--url", envvar="FERRY_URL", default=DEFAULT_URL, show_default=True,
                        help="Server base URL (env FERRY_URL).")(func)


def admin_token_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--admin-token", envvar="FERRY_ADMIN_TOKEN", default=None,
                        help="The server's admin token, sent as 'Authorization: Bearer TOKEN' "
                             "(env FERRY_ADMIN_TOKEN, as for `ferry serve`); needed when the "
                             "server is not on loopback or was started with one.")(func)


def existing_store(url: str) -> str:
    """``url`` ready for a read-only command: its extra installed, a relative SQLite path made
    absolute, and refused (``ClickException`` naming the path) when that file does not exist,
    instead of opening a new, empty store."""
    from ferry._extras import require_url
    from ferry.errors import FerryError
    from ferry.settings import absolute_sqlite_url, sqlite_file

    try:
        require_url(url, "the evaluation store")
    except FerryError as exc:
        raise click.ClickException(exc.message) from None
    file = sqlite_file(url)
    if file is not None and not file.is_file():
        raise click.ClickException(
            f"no evaluation store at {file} (--store {url}): run this in the folder `ferry "
            f"serve` ran in, or pass the server's file, e.g. --store sqlite:////srv/ferry.db")
    return absolute_sqlite_url(url)


def resolve_repository(repository: str | None) -> Any:
    from pathlib import Path

    from ferry.settings import bundled_repository

    return Path(repository) if repository else bundled_repository()
