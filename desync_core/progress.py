"""Progress reporting on stderr (``extract.md`` §10).

Shown only when stderr is a terminal, or ``DESYNC_PROGRESSBAR_ENABLED`` or
``DESYNC_ENABLE_PARSABLE_PROGRESS`` is set. Terminal mode draws a tqdm bar; parsable
mode prints ``<prefix><percent %6.02f>% <time left>`` lines every 500 ms, the shape
consumers such as RAUC parse.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from desync_core.durations import format_duration


class Progress:
    """A progress counter; the base class reports nothing."""

    def update(self, n: int = 1) -> None:
        """Record ``n`` more units done."""

    def set_total(self, total: int) -> None:
        """Change the total."""

    def close(self) -> None:
        """Finish the bar."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ParsableProgress(Progress):
    """Line-oriented progress for programs: one line every ``interval`` seconds."""

    def __init__(self, prefix: str, total: int, stream: TextIO, interval: float = 0.5) -> None:
        self.prefix = prefix
        self.total = total
        self.done = 0
        self.stream = stream
        self.interval = interval
        self.started = time.monotonic()
        self.last = 0.0
        self.lock = threading.Lock()
        self.closed = False

    def _line(self, final: bool) -> str:
        if self.total <= 0:
            return self.prefix.rstrip() if not final else self.prefix
        pct = min(100.0, 100.0 * self.done / self.total)
        elapsed = time.monotonic() - self.started
        line = f"{self.prefix}{pct:6.02f}%"
        if final:
            line += f" {format_duration(elapsed)}"
        elif self.done:
            remaining = elapsed * (self.total - self.done) / self.done
            line += f" {format_duration(remaining)}"
        return line

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last >= self.interval:
                self.last = now
                self.stream.write(self._line(False) + "\n")
                self.stream.flush()

    def set_total(self, total: int) -> None:
        with self.lock:
            self.total = total

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.stream.write(self._line(True) + "\n")
            self.stream.flush()


class BarProgress(Progress):
    """A tqdm bar: ``<prefix>`` + bar + percentage + time left."""

    def __init__(self, prefix: str, total: int, stream: TextIO) -> None:
        import tqdm

        # No monitor thread: worker pools may fork after the bar is created.
        tqdm.tqdm.monitor_interval = 0
        self.lock = threading.Lock()
        self.bar: Any = tqdm.tqdm(
            total=total, file=stream, desc=prefix.rstrip() or None, mininterval=0.2,
            bar_format="{desc} {bar} {percentage:6.2f}% {remaining}", leave=True,
            dynamic_ncols=True,
        )

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.bar.update(n)

    def set_total(self, total: int) -> None:
        with self.lock:
            self.bar.total = total
            self.bar.refresh()

    def close(self) -> None:
        with self.lock:
            self.bar.close()


def progress_enabled(stream: TextIO | None = None) -> bool:
    """Whether progress should be shown on ``stream`` (stderr by default)."""
    stream = stream or sys.stderr
    if os.environ.get("DESYNC_ENABLE_PARSABLE_PROGRESS") or os.environ.get(
        "DESYNC_PROGRESSBAR_ENABLED"
    ):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def new_progress(prefix: str, total: int, *, enabled: bool | None = None) -> Progress:
    """A progress reporter for an operation of ``total`` units (bytes or chunks)."""
    stream = sys.stderr
    if enabled is None:
        enabled = progress_enabled(stream)
    if not enabled:
        return Progress()
    if os.environ.get("DESYNC_ENABLE_PARSABLE_PROGRESS"):
        return ParsableProgress(prefix, total, stream)
    return BarProgress(prefix, total, stream)


__all__ = ["BarProgress", "ParsableProgress", "Progress", "new_progress", "progress_enabled"]
