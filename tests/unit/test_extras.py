"""What a configured URL needs installed, and the line that names it (``ferry._extras``)."""

from __future__ import annotations

import pytest

from ferry._extras import missing_message, module_for_url


@pytest.mark.parametrize(("url", "module", "message"), [
    ("postgresql://db/ferry", "psycopg", "X needs psycopg: pip install 'ferry[postgres]'"),
    ("postgres://db/ferry", "psycopg", "X needs psycopg: pip install 'ferry[postgres]'"),
    ("postgresql+psycopg://db/f", "psycopg", "X needs psycopg: pip install 'ferry[postgres]'"),
    ("s3://bucket/repo", "s3fs", "X needs s3fs: pip install 'ferry[s3]'"),
    ("gs://bucket/repo", "gcsfs", "X needs gcsfs: pip install gcsfs"),
    ("sqlite:///ferry.db", None, None),
    ("file:///srv/models", None, None),
    ("/srv/models", None, None),
    ("models", None, None),
])
def test_what_a_url_needs(url: str, module: str | None, message: str | None) -> None:
    assert module_for_url(url) == module
    if module is not None:
        assert missing_message(module, "X") == message
