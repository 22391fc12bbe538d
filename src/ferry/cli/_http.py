"""The CLI's one HTTP call to a running server: JSON (or raw bytes) in, JSON out, and every
failure as one ``ClickException`` line (``404: <the server's error>``, ``cannot reach URL``)
instead of a traceback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click


def call(method: str, url: str, body: Any = None, *, token: str | None = None,
         data: bytes | None = None, content_type: str = "application/json",
         timeout: float = 60.0) -> Any:
    """``method`` ``url`` with ``body`` as JSON (or ``data`` as it is, of ``content_type``);
    ``token`` goes as ``Authorization: Bearer``. Returns the decoded JSON answer."""
    if body is not None:
        data = json.dumps(body).encode()
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        message = exc.read().decode(errors="replace")
        try:
            message = json.loads(message)["error"]
        except (ValueError, KeyError, TypeError):
            pass
        raise click.ClickException(f"{exc.code}: {message or exc.reason}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None
