"""Progress of a ``ferry batch`` run on stderr: a rich bar on a terminal, plain lines
otherwise (logs, CI, a scheduler's child).

Both take ``(rows_done, rows_total or None, rows_rejected)`` calls from the engine (from its
writer thread, once per written chunk) and show rows done/total, rows/s, rejected rows and
the time left. Rates count the rows of this attempt since the display was made (model load
included, so they agree with the closing summary); a resumed run passes the rows its earlier
attempts did, which are not counted as instant.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

PLAIN_EVERY_S = 5.0
"""Plain progress: a line at least this often ..."""
PLAIN_EVERY_SHARE = 0.10
"""... and each time another tenth of the rows is done (when the total is known)."""


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Rate:
    """Rows per second and time left for this attempt (``base``: rows done before it)."""

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self.started = time.monotonic()

    def __call__(self, done: int, total: int | None) -> tuple[float, float | None]:
        elapsed = time.monotonic() - self.started
        rate = max(0, done - self.base) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if total is not None and rate > 0 else None
        return rate, eta


class PlainProgress:
    """A line every ``PLAIN_EVERY_S`` seconds or every tenth of the rows, whichever first:
    ``progress: 600,000/2,000,000 rows (30%), 412,000 rows/s, 12 rejected, ETA 0:00:03``."""

    def __init__(self, base: int = 0, stream: IO[str] | None = None,
                 every_s: float = PLAIN_EVERY_S, every_share: float = PLAIN_EVERY_SHARE) -> None:
        self.stream = stream or sys.stderr
        self.every_s, self.every_share = every_s, every_share
        self.rate = _Rate(base)
        self.last = time.monotonic()
        self.last_share = 0.0

    def __call__(self, done: int, total: int | None, rejected: int) -> None:
        rate, eta = self.rate(done, total)
        t = time.monotonic()
        share = done / total if total else 0.0
        if (t - self.last < self.every_s
                and not (total and share - self.last_share >= self.every_share - 1e-9)):
            return
        self.last = t
        self.last_share = share
        if total:
            text = (f"{done:,}/{total:,} rows ({share:.0%}), {rate:,.0f} rows/s, "
                    f"{rejected:,} rejected, ETA {_clock(eta)}")
        else:
            text = f"{done:,} rows, {rate:,.0f} rows/s, {rejected:,} rejected"
        print(f"progress: {text}", file=self.stream, flush=True)

    def end(self) -> None:
        """Nothing to tidy: every line is complete."""


class RichProgress:
    """A live bar (rich): ``scoring ━━━━━━╸━━━ 600,000/2,000,000 rows 412,000 rows/s
    12 rejected ETA 0:00:03``, redrawn ten times a second by rich's own thread."""

    def __init__(self, base: int = 0, description: str = "scoring") -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.fields[rows]} rows"), TextColumn("{task.fields[rate]} rows/s"),
            TextColumn("{task.fields[rejected]} rejected"), TextColumn("ETA {task.fields[eta]}"),
            console=Console(file=sys.stderr), transient=False)
        self._task = self._progress.add_task(description, total=None, rows="0", rate="0",
                                             rejected="0", eta="?")
        self._rate = _Rate(base)
        self._lock = threading.Lock()
        self._progress.start()

    def __call__(self, done: int, total: int | None, rejected: int) -> None:
        rate, eta = self._rate(done, total)
        fields: dict[str, Any] = {
            "rows": f"{done:,}/{total:,}" if total else f"{done:,}",
            "rate": f"{rate:,.0f}", "rejected": f"{rejected:,}", "eta": _clock(eta)}
        with self._lock:
            self._progress.update(self._task, completed=done, total=total, **fields)

    def end(self) -> None:
        with self._lock:
            self._progress.stop()


def progress_display(quiet: bool, base: int = 0) -> PlainProgress | RichProgress | None:
    """None with ``-q``; a rich bar when stderr is a terminal; else plain lines. ``base``:
    rows an earlier attempt of the run already did (``--resume``)."""
    if quiet:
        return None
    if sys.stderr.isatty():
        return RichProgress(base)
    return PlainProgress(base)
