"""Object storage for batch inputs and outputs: any fsspec URL (``s3://``, ``gs://``,
``az://``, ``memory://``, ...). Local paths and ``file://`` URLs stay on the local code paths.

S3 needs ``pip install 'ferry[s3]'`` (s3fs); credentials come the usual AWS ways
(environment, ``~/.aws``, instance role) and the endpoint of an S3-compatible store from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, as for a model repository on S3.

Listing follows local folders: a folder (a URL ending in ``/``, or a prefix holding objects)
means every object under it whose path below the folder has no part starting with ``.`` or
``_`` (``_SUCCESS``, ``_ferry.json``, Spark's ``_temporary/``, Ferry's staging).
"""

from __future__ import annotations

import os
from typing import IO, Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq

from ferry._extras import require_url
from ferry.batch.job import BatchError

_LOCAL_SCHEMES = ("", "file", "sqlite", "postgresql", "postgres")


def is_remote(text: str | None) -> bool:
    """True for a URL that fsspec opens (not a local path, ``file://`` or a database)."""
    if not text or "://" not in text:
        return False
    return urlsplit(text).scheme.split("+")[0] not in _LOCAL_SCHEMES


def local_path(text: str) -> str:
    """``file:///x`` -> ``/x``; other text unchanged."""
    return text[len("file://"):] if text.startswith("file://") else text


def filesystem(url: str, option: str = "--input") -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path inside it (no protocol)."""
    import fsspec

    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url.startswith(("s3://", "s3a://")) and endpoint:
        options["endpoint_url"] = endpoint
    require_url(url, option)
    try:
        return fsspec.core.url_to_fs(url, **options)  # type: ignore[no-any-return]
    except ImportError as exc:
        raise BatchError(f"{option} {url}: {exc}") from None
    except ValueError as exc:  # "Protocol not known"
        raise BatchError(f"{option} {url}: {exc}") from None


def _visible(relative: str) -> bool:
    return not any(part.startswith((".", "_")) for part in relative.split("/") if part)


def expand(text: str) -> list[str]:
    """``--input`` on object storage: the files of a glob, a folder or one file, as URLs."""
    fs, path = filesystem(text)
    try:
        fs.invalidate_cache()
        if any(c in path for c in "*?["):
            found = [p for p, info in fs.glob(path, detail=True).items()
                     if info.get("type") == "file"]
        elif text.endswith("/") or fs.isdir(path):
            base = path.rstrip("/")
            found = [p for p in fs.find(base)
                     if _visible(p[len(base):])]
        elif fs.isfile(path):
            found = [path]
        else:
            raise BatchError(f"--input {text!r}: no such file")
    except BatchError:
        raise
    except (OSError, ValueError) as exc:
        raise BatchError(f"--input {text!r}: cannot list it: {exc}") from None
    return [fs.unstrip_protocol(p) for p in sorted(found)]


def is_folder(url: str) -> bool:
    """Whether ``--output url`` names an existing folder (a prefix holding objects). Fails
    when the protocol is not installed; an unreachable store answers False (the sink's
    write check reports it)."""
    fs, path = filesystem(url, "--output")
    try:
        fs.invalidate_cache()
        return bool(fs.isdir(path))
    except (OSError, ValueError):
        return False


def parquet_file(path: str) -> pq.ParquetFile:
    """A Parquet file on this machine or behind any fsspec URL (read through pyarrow with
    the fsspec filesystem, so only the footer and the columns read are fetched)."""
    if not is_remote(path):
        return pq.ParquetFile(local_path(path))
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, inner = filesystem(path)
    return pq.ParquetFile(inner, filesystem=PyFileSystem(FSSpecHandler(fs)))


def open_binary(path: str) -> IO[bytes]:
    fs, inner = filesystem(path)
    return fs.open(inner, "rb")  # type: ignore[no-any-return]


def open_text(path: str) -> IO[str]:
    if not is_remote(path):
        return open(local_path(path), encoding="utf-8")  # noqa: SIM115 - the caller closes
    fs, inner = filesystem(path)
    return fs.open(inner, "rt", encoding="utf-8")  # type: ignore[no-any-return]
