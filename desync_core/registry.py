"""Registries that plugins fill through the hooks in :mod:`desync_core.hookspecs`.

A registry maps names (URL schemes, format names, seed types, command names) to
factories. Factories may be given as ``"package.module:attribute"`` strings so that a
plugin's entry-point module stays import-light: the module is imported only when the
name is first used.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from desync_core.errors import (
    PluginConflictError,
    PluginLoadError,
    UnknownSchemeError,
    UsageError,
)

#: Which distribution of this repository provides the well-known names when they are
#: not installed (each is the package in ``plugins/<name>``).
KNOWN_PLUGINS: dict[str, dict[str, str]] = {
    "chunk store": {
        "gs": "desync-store-gcs",
        "http": "desync-store-http",
        "https": "desync-store-http",
        "oci+http": "desync-store-oci",
        "oci+https": "desync-store-oci",
        "s3+http": "desync-store-s3",
        "s3+https": "desync-store-s3",
        "sftp": "desync-store-sftp",
        "ssh": "desync-store-ssh",
    },
    "index store": {
        "gs": "desync-store-gcs",
        "http": "desync-store-http",
        "https": "desync-store-http",
        "s3+http": "desync-store-s3",
        "s3+https": "desync-store-s3",
        "sftp": "desync-store-sftp",
        # the plugins refuse these with desync's message; without them, the hint
        "oci+http": "desync-store-oci",
        "oci+https": "desync-store-oci",
        "ssh": "desync-store-ssh",
    },
    "archive format": {
        "gnu-tar": "desync-format-tar",
        "tar": "desync-format-tar",
    },
    "seed type": {},
    "command": {
        "chunk-server": "desync-store-http",
        "index-server": "desync-store-http",
        "mount-index": "desync-mount-fuse",
        "pull": "desync-store-ssh",
    },
}


def load_object(spec: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass
class Registration:
    """One name registered by one plugin."""

    name: str
    factory: str | Callable[..., Any]
    description: str
    plugin: str
    _loaded: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """Return the factory, importing it on first use."""
        if self._loaded is None:
            if isinstance(self.factory, str):
                try:
                    self._loaded = load_object(self.factory)
                except Exception as exc:
                    raise PluginLoadError(
                        f"plugin {self.plugin!r} failed to load {self.factory}: {exc}"
                    ) from exc
            else:
                self._loaded = self.factory
        return self._loaded


class Registry:
    """Names of one kind (``"chunk store"``, ``"archive format"``...) to factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Registration] = {}
        self._conflicts: dict[str, list[Registration]] = {}
        self._refusals: dict[str, tuple[str, str]] = {}
        #: Name of the plugin whose hook is running; set by the plugin manager.
        self.current_plugin = "?"
        #: Plugin name -> load error, for "needs the X plugin, which failed to load".
        self.load_errors: dict[str, str] = {}

    def add(
        self,
        names: str | Iterable[str],
        factory: str | Callable[..., Any],
        description: str = "",
    ) -> None:
        """Register ``factory`` under each of ``names``.

        A name claimed by two plugins is recorded as a conflict and raises
        :class:`PluginConflictError` when it is used.
        """
        for name in [names] if isinstance(names, str) else names:
            reg = Registration(name, factory, description, self.current_plugin)
            existing = self._entries.get(name)
            if existing is not None and existing.plugin != reg.plugin:
                self._conflicts.setdefault(name, [existing]).append(reg)
            self._entries[name] = reg

    def refuse(self, names: str | Iterable[str], message: str) -> None:
        """Declare that ``names`` are known but not supported in this registry.

        Using one raises :class:`UsageError` with ``message`` (for example an ssh
        plugin refusing index stores with desync's wording). A real registration of
        the same name by another plugin wins.
        """
        for name in [names] if isinstance(names, str) else names:
            self._refusals[name] = (message, self.current_plugin)

    def refusals(self) -> dict[str, str]:
        """Refused names and their messages."""
        return {name: msg for name, (msg, _) in self._refusals.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Registration]:
        return iter(sorted(self._entries.values(), key=lambda r: r.name))

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def by_plugin(self, plugin: str) -> list[str]:
        """Names registered by one plugin."""
        return sorted(n for n, r in self._entries.items() if r.plugin == plugin)

    def drop_plugin(self, plugin: str) -> None:
        """Forget everything one plugin registered (it was disabled)."""
        self._entries = {n: r for n, r in self._entries.items() if r.plugin != plugin}
        self._refusals = {n: v for n, v in self._refusals.items() if v[1] != plugin}
        for name in list(self._conflicts):
            left = [r for r in self._conflicts[name] if r.plugin != plugin]
            if len(left) > 1:
                self._conflicts[name] = left
            else:
                del self._conflicts[name]
                if left:
                    self._entries[name] = left[0]

    def get(self, name: str, *, what: str | None = None) -> Registration:
        """Look up ``name``; unknown names raise an error naming the package to install.

        Args:
            name: the scheme or format name.
            what: how to show the thing asked for in the message (e.g. the full URL).
        """
        conflict = self._conflicts.get(name)
        if conflict:
            plugins = ", ".join(sorted({r.plugin for r in conflict}))
            raise PluginConflictError(
                f"{self.kind} {name!r} is registered by more than one plugin: {plugins}; "
                "disable one with DESYNC_DISABLE_PLUGINS"
            )
        try:
            return self._entries[name]
        except KeyError:
            refusal = self._refusals.get(name)
            if refusal is not None:
                raise UsageError(refusal[0]) from None
            raise self.unknown(name, what) from None

    def unknown(self, name: str, what: str | None = None) -> UnknownSchemeError:
        """The error for a name nobody registered, with an install hint if we know one."""
        shown = what or name
        dist = KNOWN_PLUGINS.get(self.kind, {}).get(name)
        if dist is None:
            known = ", ".join(self.names()) or "none"
            return UnknownSchemeError(f"unsupported {self.kind} {shown!r} (known: {known})")
        return UnknownSchemeError(missing_plugin_message(shown, dist, self.load_errors))


def missing_plugin_message(what: str, dist: str, load_errors: dict[str, str]) -> str:
    """"X needs the desync-store-s3 plugin (...)": failed to load, or how to install it.

    The plugins are packages of this repository (``plugins/store_s3`` is
    ``desync-store-s3``), so the hint names the directory to install from.
    """
    plugin_name = dist.removeprefix("desync-").replace("-", "_")
    error = load_errors.get(plugin_name)
    if error:
        return f"{what} needs the {dist} plugin, which failed to load: {error}"
    return (f"{what} needs the {dist} plugin "
            f"(pip install ./plugins/{plugin_name} from the desync-py repository)")


@dataclass
class Command:
    """A CLI subcommand contributed through :func:`desync_add_commands`.

    Attributes:
        name: the subcommand name (``desync <name>``).
        help: one-line description shown in ``desync --help``.
        add_arguments: fills the subcommand's ``argparse`` parser; use the helpers in
            :mod:`desync_core.cli.options` for the shared store and server flags.
        run: ``run(args, ctx) -> int | None``; raise a :class:`DesyncError` for user
            errors. ``ctx`` is a :class:`desync_core.context.Context`.
        usage: the positional-argument synopsis shown in help, e.g. ``"<index> <file>"``.
        plugin: set by the registry.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[..., int | None]
    usage: str = ""
    description: str = ""
    plugin: str = ""


class CommandRegistry:
    """Subcommands by name."""

    kind = "command"

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self.current_plugin = "?"
        self.conflicts: list[str] = []

    def add(self, command: Command) -> None:
        """Add a subcommand; a name already taken by another plugin is a conflict."""
        command.plugin = self.current_plugin
        old = self.commands.get(command.name)
        if old is not None and old.plugin != command.plugin:
            self.conflicts.append(
                f"command {command.name!r} is registered by {old.plugin} and {command.plugin}"
            )
            return
        self.commands[command.name] = command

    def by_plugin(self, plugin: str) -> list[str]:
        """Names of the commands one plugin added."""
        return sorted(n for n, c in self.commands.items() if c.plugin == plugin)

    def drop_plugin(self, plugin: str) -> None:
        """Forget the commands of a plugin that was disabled."""
        self.commands = {n: c for n, c in self.commands.items() if c.plugin != plugin}


__all__ = [
    "KNOWN_PLUGINS",
    "Command",
    "CommandRegistry",
    "Registration",
    "Registry",
    "load_object",
    "missing_plugin_message",
]
