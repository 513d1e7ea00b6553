"""Store and index locations, parsed once, in one place (``store.md`` §1, ``remote.md`` §9).

A location is a local path unless it starts with ``scheme://``; ``A|B`` inside one
``-s`` value is a failover group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from desync_core.errors import UsageError

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")


@dataclass(frozen=True)
class StoreLocation:
    """A parsed location.

    Attributes:
        raw: the string as the user gave it (used for config lookups and messages).
        scheme: lower-case URL scheme, ``""`` for a local path.
    """

    raw: str
    scheme: str

    def __str__(self) -> str:
        return self.raw

    @property
    def is_local(self) -> bool:
        """A local directory (no URL scheme)."""
        return not self.scheme

    @property
    def url(self) -> SplitResult:
        """The ``urllib.parse.urlsplit`` parts of a URL location."""
        return urlsplit(self.raw)

    @property
    def path(self) -> str:
        """The local path, or the URL's path."""
        return self.raw if self.is_local else self.url.path


def parse_location(text: str) -> StoreLocation:
    """Parse one store location (not a group)."""
    if not text:
        raise UsageError("empty store location")
    m = _URL_RE.match(text)
    if m is None:
        return StoreLocation(text, "")
    try:
        urlsplit(text).port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise UsageError(f"invalid store location {text!r}: {exc}") from None
    return StoreLocation(text, m.group(1).lower())


def parse_group(text: str) -> list[StoreLocation]:
    """Parse a ``-s`` value, which may be a failover group ``A|B|C``."""
    return [parse_location(part) for part in text.split("|")]


def split_index_location(text: str) -> tuple[StoreLocation, str]:
    """Split an index location into the store that holds it and the file name.

    ``http://host/dir/x.caibx`` -> (``http://host/dir/``, ``x.caibx``);
    ``dir/x.caibx`` -> (``dir``, ``x.caibx``); ``x.caibx`` -> (``.``, ``x.caibx``).
    """
    loc = parse_location(text)
    if loc.is_local:
        head, _, name = text.rpartition("/")
        base = head if head else ("/" if text.startswith("/") else ".")
        return StoreLocation(base, ""), name
    parts = loc.url
    head, _, name = parts.path.rpartition("/")
    base = parts._replace(path=head + "/", query=parts.query, fragment="").geturl()
    return StoreLocation(base, loc.scheme), name


def index_options_key(text: str) -> str:
    """The key used to look up store options for an index location: cut at the last /."""
    return text.rpartition("/")[0] if "/" in text else text


__all__ = [
    "StoreLocation",
    "index_options_key",
    "parse_group",
    "parse_location",
    "split_index_location",
]
