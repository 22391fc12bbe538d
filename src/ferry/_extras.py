"""Optional extras: what a configured feature needs, checked when Ferry starts.

One rule for every optional dependency: a feature that is configured (an ``s3://``
repository, a ``postgresql://`` store, ``--engine ray``, a model whose runtime needs
xgboost) but whose package is not installed fails when the command starts, with one line
naming what to install::

    the repository s3://bucket/repo needs s3fs: pip install 'ferry[s3]'

``require`` raises ``ExtraNotInstalled`` with that line; the CLI prints it as its error and
exits non-zero, ``ferry serve`` exits before it listens. Checking imports the module: a
package that is present but broken (an ``ImportError`` while importing it) counts as missing,
which is what the user has to fix the same way.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ferry.errors import ExtraNotInstalled

if TYPE_CHECKING:
    from ferry.settings import ServerSettings

EXTRAS: dict[str, tuple[str, str]] = {
    "s3fs": ("s3fs", "s3"),
    "psycopg": ("psycopg", "postgres"),
    "ray.data": ("ray[data]", "ray"),
    "sklearn": ("scikit-learn", "sklearn"),
    "joblib": ("joblib", "sklearn"),
    "xgboost": ("xgboost", "gbdt"),
    "lightgbm": ("lightgbm", "gbdt"),
}
"""Import name -> (pip package, Ferry extra that installs it)."""

_LOCAL_SCHEMES = ("", "file", "sqlite")


def install_hint(module: str) -> tuple[str, str]:
    """The package to name and the ``pip install`` argument for ``module``: the Ferry extra
    when one ships it, else the package itself (e.g. gcsfs, which no extra installs)."""
    package, extra = EXTRAS.get(module, (module.split(".")[0], ""))
    return package, f"'ferry[{extra}]'" if extra else package


def missing_message(module: str, feature: str) -> str:
    """``<feature> needs <package>: pip install 'ferry[<extra>]'``."""
    package, target = install_hint(module)
    return f"{feature} needs {package}: pip install {target}"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature`` (e.g. ``"the evaluation store postgresql://db"``),
    or raise ``ExtraNotInstalled`` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExtraNotInstalled(missing_message(module, feature)) from None


def module_for_url(url: str) -> str | None:
    """The optional module that opening ``url`` needs: ``psycopg`` for ``postgresql://``,
    the fsspec implementation for object storage (``s3fs`` for ``s3://``, ``gcsfs`` for
    ``gs://``), None for local paths, ``file://``, SQLite and schemes Ferry does not know."""
    if "://" not in url:
        return None
    scheme = urlsplit(url).scheme.lower()
    base, _, driver = scheme.partition("+")
    if base in _LOCAL_SCHEMES:
        return None
    if base in ("postgresql", "postgres"):
        return driver or "psycopg"
    from fsspec.registry import known_implementations

    known = known_implementations.get(base)
    return None if known is None else str(known["class"]).split(".")[0]


def require_url(url: str | None, feature: str) -> None:
    """``require`` what ``url`` needs (nothing for a local path or SQLite). ``feature`` names
    the setting, e.g. ``"the repository"``; the URL is added without its password."""
    if not url:
        return
    module = module_for_url(url)
    if module is not None:
        require(module, f"{feature} {_redact(url)}")


def require_for_server(settings: ServerSettings) -> None:
    """Every extra a server with ``settings`` needs before it loads anything: the
    repository's object storage, the evaluation store's and the schedules' database
    drivers, the predictions database's."""
    require_url(settings.repository, "the repository")
    if settings.store.lower() != "none":
        require_url(settings.store, "the evaluation store")
    require_url(settings.schedules_store(), "the schedules' run-record store")
    require_url(settings.predictions_url, "the predictions database (predictions_url)")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
