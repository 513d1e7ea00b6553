"""Go-style durations (``500ms``, ``1m30s``) used by flags and progress output."""

from __future__ import annotations

import re

from desync_core.errors import UsageError

_DURATION_RE = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse a Go duration (``1h2m3.5s``, ``500ms``, ``0``) into seconds."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m:
            raise UsageError(f'invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise UsageError(f'invalid duration "{text}"')
    return sign * total


def format_duration(seconds: float) -> str:
    """Format seconds like Go's ``time.Duration`` rounded to seconds (``1m30s``, ``1d2h0m0s``)."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if days:
        return f"{days}d{h}h{m}m{s}s"
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


__all__ = ["format_duration", "parse_duration"]
