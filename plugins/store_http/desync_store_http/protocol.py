"""Lean HTTP/1.1 pieces for the servers' hot path (#18).

The stdlib parses request headers with :mod:`email.parser` and formats every ``Date``
header with :mod:`email.utils`: together about half of the CPU a small GET costs. The
servers only look up a handful of headers, so :func:`read_headers` splits the lines
itself (same limits as the stdlib: 65536 bytes a line, 100 headers) into a
:class:`Headers` mapping, and :func:`http_date` formats the date once a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Protocol

#: Longest header line accepted (as :mod:`http.client`).
MAX_LINE = 65536
#: Most header lines accepted (as :mod:`http.client`).
MAX_HEADERS = 100


class LineReader(Protocol):
    """What :func:`read_headers` reads from (a buffered socket file)."""

    def readline(self, size: int = -1, /) -> bytes:
        """One line of at most ``size`` bytes."""


class HeaderError(Exception):
    """Headers that cannot be read; ``status`` and the message go into the reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Headers:
    """Request headers: case-insensitive lookups; the first value wins, as with
    :class:`email.message.Message` (``get``), and every value is kept (``get_all``)."""

    __slots__ = ("_first", "_items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._first: dict[str, str] = {}
        for name, value in items:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name``, else ``default``."""
        return self._first.get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` in request order."""
        key = name.lower()
        return [v for n, v in self._items if n.lower() == key]

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, _ in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        """All ``(name, value)`` pairs in request order."""
        return list(self._items)

    def __str__(self) -> str:
        return "".join(f"{n}: {v}\r\n" for n, v in self._items)


def read_headers(rfile: LineReader) -> Headers:
    """Read header lines up to the blank line (or EOF) from ``rfile``.

    Obsolete line folding (a line starting with a space or tab) continues the previous
    value, as the stdlib does.

    Raises:
        HeaderError: a line longer than :data:`MAX_LINE` or more than
            :data:`MAX_HEADERS` lines (431), a line that is not ``name: value`` (400).
    """
    items: list[tuple[str, str]] = []
    count = 0
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HeaderError(431, "Line too long")
        count += 1
        if count > MAX_HEADERS:
            raise HeaderError(431, f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            return Headers(items)
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):
            if not items:
                raise HeaderError(400, "continuation line before any header")
            name, value = items[-1]
            items[-1] = (name, f"{value} {text.strip()}")
            continue
        name, sep, value = text.partition(":")
        if not sep or not name or name != name.strip():
            raise HeaderError(400, "malformed header line")
        items.append((name, value.strip()))


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The current time as an HTTP ``Date`` value, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


__all__ = ["MAX_HEADERS", "MAX_LINE", "HeaderError", "Headers", "LineReader", "http_date",
           "read_headers"]
