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


def resolve_repository(repository: str | None) -> Any:
    from pathlib import Path

    from ferry.settings import bundled_repository

    return Path(repository) if repository else bundled_repository()
