"""The configuration file (``store.md`` §5): store options and credentials by location.

Keys of ``store-options`` (and of location sections such as ``oci-credentials`` and
``s3-credentials``) are shell-glob patterns with Go's ``path.Match`` rules: ``*`` and
``?`` never match ``/``. A location matched by more than one key is an error.

The core owns the file and ``store-options``; what a credentials section *means*
belongs to the plugin that registers it (``desync_register_config_sections``) and
reads its entries with :meth:`Config.section_entry`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from desync_core.errors import ConfigError
from desync_core.location import parse_location
from desync_core.stores.options import StoreOptions


def default_config_path() -> str:
    """``$HOME/.config/desync/config.json``."""
    return os.path.join(os.path.expanduser("~"), ".config", "desync", "config.json")


#: One pattern position: a literal character, ``None`` for ``?``, or a class
#: ``(negated, ((lo, hi), ...))``.
_Item = str | None | tuple[bool, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class _Chunk:
    """A run of single-character items, preceded by one or more ``*`` if ``star``."""

    star: bool
    items: tuple[_Item, ...]


@cache
def _compile_glob(pattern: str) -> tuple[_Chunk, ...] | None:
    """Split a Go ``path.Match`` pattern into chunks; None if it is malformed.

    Consecutive stars are one star: ``a**b`` and ``a*b`` are the same pattern.
    """
    chunks: list[_Chunk] = []
    items: list[_Item] = []
    star = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if items:  # (an empty chunk only before a leading star: nothing to match)
                chunks.append(_Chunk(star, tuple(items)))
                items = []
            star = True
            while i < n and pattern[i] == "*":
                i += 1
            continue
        if c == "?":
            items.append(None)
        elif c == "\\":
            i += 1
            if i >= n:
                return None
            items.append(pattern[i])
        elif c == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            ranges: list[tuple[str, str]] = []
            while True:
                if i >= n:
                    return None
                if pattern[i] == "]" and ranges:
                    break
                lo, i = _class_char(pattern, i)
                if lo is None:
                    return None
                hi = lo
                if i < n and pattern[i] == "-":
                    upper, i = _class_char(pattern, i + 1)
                    if upper is None:
                        return None
                    hi = upper
                ranges.append((lo, hi))  # lo > hi is valid in Go and matches nothing
            items.append((negate, tuple(ranges)))
        else:
            items.append(c)
        i += 1
    chunks.append(_Chunk(star, tuple(items)))
    return tuple(chunks)


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            return None, i
    return pattern[i], i + 1


def _match_items(items: tuple[_Item, ...], name: str, pos: int) -> int:
    """Where ``items`` matched at ``name[pos:]`` end, or -1."""
    if pos + len(items) > len(name):
        return -1
    for item in items:
        c = name[pos]
        if item is None:
            if c == "/":
                return -1
        elif isinstance(item, str):
            if c != item:
                return -1
        else:
            negate, ranges = item
            if any(lo <= c <= hi for lo, hi in ranges) == negate:
                return -1
        pos += 1
    return pos


def glob_match(pattern: str, name: str) -> bool:
    """Go ``path.Match``; a malformed pattern never matches.

    Each chunk is placed at the first position where it matches, never revisited:
    since ``*`` cannot cross ``/``, the leftmost place leaves the most room for what
    follows, except for the last chunk, which must end the name. That is Go's own
    strategy (and its results, e.g. a class matching ``/``), and it is O(len(pattern)
    * len(name)): a backtracking regex took exponential time on keys with many stars.
    """
    chunks = _compile_glob(pattern)
    if chunks is None:
        return False
    pos = 0
    for k, chunk in enumerate(chunks):
        last = k == len(chunks) - 1
        if chunk.star and not chunk.items:
            if last:
                return "/" not in name[pos:]
            continue
        if not chunk.star:
            pos = _match_items(chunk.items, name, pos)
            if pos < 0:
                return False
            continue
        start = pos
        while True:
            end = _match_items(chunk.items, name, start)
            if end >= 0 and (not last or end == len(name)):
                pos = end
                break
            if start >= len(name) or name[start] == "/":
                return False  # the star cannot skip this character
            start += 1
    return pos == len(name)


def location_matches(pattern: str, location: str) -> bool:
    """Whether a config key matches a store location (``store.md`` §5.2)."""
    loc = parse_location(location) if location else None
    if loc is not None and not loc.is_local:
        return glob_match(_strip_slash(pattern), _strip_slash(location))
    return glob_match(os.path.abspath(pattern), os.path.abspath(location))


def _strip_slash(s: str) -> str:
    return s[:-1] if s.endswith("/") else s


#: Location sections of desync's config file, printed by ``desync config`` even when
#: empty (desync's output); plugins register what they mean and may add others.
DESYNC_SECTIONS = ("s3-credentials", "oci-credentials")


@dataclass
class Config:
    """The parsed configuration file."""

    path: str = ""
    store_options: dict[str, StoreOptions] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, dict[str, Any]] | None:
        """A location section (``{"<glob>": {...}}``) of the file, or None.

        Raises:
            ConfigError: it is not an object of objects.
        """
        section = self.raw.get(name)
        if section is None:
            return None
        if not isinstance(section, dict) or not all(isinstance(v, dict)
                                                    for v in section.values()):
            raise ConfigError(f"reading {self.path}: {name!r} must map locations to objects")
        return section

    def section_entry(self, name: str, location: str) -> dict[str, Any] | None:
        """The entry of section ``name`` whose glob key matches ``location``.

        Raises:
            ConfigError: the section is malformed, or several keys match.
        """
        return self._match(self.section(name), location, name)

    def _match(self, table: dict[str, Any] | None, location: str, what: str) -> Any:
        if not table:
            return None
        hits = [key for key in table if location_matches(key, location)]
        if len(hits) > 1:
            raise ConfigError(f"multiple {what} entries match the location {location!r}")
        return table[hits[0]] if hits else None

    def options_for(self, location: str) -> StoreOptions:
        """The store options for a location (defaults when no entry matches)."""
        found = self._match(self.store_options, location, "store-options")
        return found if found is not None else StoreOptions()

    def to_json(self, sections: tuple[str, ...] = ()) -> str:
        """The effective configuration as ``desync config`` prints it: desync's
        sections, then ``sections`` (those plugins registered), then store options."""
        doc: dict[str, Any] = {}
        for name in dict.fromkeys((*DESYNC_SECTIONS, *sections)):
            doc[name] = self.section(name)
        doc["store-options"] = (
            None if self.store_options is None
            else {k: v.to_json() for k, v in self.store_options.items()}
        )
        return json.dumps(doc, indent=2) + "\n"


def parse_config(text: str, path: str) -> Config:
    """Parse configuration JSON; errors name the file."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"reading {path}: {exc}") from None
    except RecursionError:  # json raises it for arrays/objects nested ~1000 deep
        raise ConfigError(f"reading {path}: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"reading {path}: the configuration must be a JSON object")
    cfg = Config(path=path, raw=doc)
    for name in DESYNC_SECTIONS:
        cfg.section(name)  # malformed desync sections are reported at once
    opts = doc.get("store-options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise ConfigError(f"reading {path}: 'store-options' must be an object")
        cfg.store_options = {
            k: StoreOptions.from_json(v, f"{path}: store-options[{k!r}]") for k, v in opts.items()
        }
    return cfg


def load_config(path: str | None = None) -> Config:
    """Load ``path``, or the default file if it exists (built-in defaults otherwise).

    An explicitly named file that is missing or unreadable is an error.
    """
    explicit = path is not None
    path = path or default_config_path()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"reading {path}: no such file") from None
        return Config(path=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"reading {path}: {exc}") from None
    return parse_config(text, path)


__all__ = [
    "DESYNC_SECTIONS",
    "Config",
    "default_config_path",
    "glob_match",
    "load_config",
    "location_matches",
    "parse_config",
]
