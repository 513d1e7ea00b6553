"""Plugin discovery and the registries built from it.

Built-in features (the local store, catar, the core commands) are plugins registered
through the same hooks as third-party ones. External plugins come from the ``desync``
entry-point group. A plugin that fails to import is recorded, reported by
``desync plugins`` and raised only when something it would provide is used. A plugin
whose hooks are invalid (a ``desync_*`` function that is no hook, a wrong signature, a
hook that raises while registering) is disabled alone, with one warning line on
stderr; every other plugin and command goes on working.

Hooks are called through pluggy (one plugin at a time, so each registration knows its
plugin), so pluggy's tracing (``DESYNC_TRACE_PLUGINS=1``) shows every call.

Environment controls:

* ``DESYNC_DISABLE_PLUGINS=a,b`` blocks the named plugins (entry-point names).
* ``DESYNC_LOAD_PLUGINS=a,b`` loads only these external plugins (empty: none).
* ``DESYNC_TRACE_PLUGINS=1`` traces hook calls to stderr.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from importlib.machinery import PathFinder
from typing import Any

import pluggy

from desync_core import hookspecs
from desync_core.markers import PROJECT
from desync_core.registry import CommandRegistry, Registry

#: Built-in plugin modules, registered under these names.
DEFAULT_PLUGINS: dict[str, str] = {
    "core_stores": "desync_core.stores.plugin",
    "core_archive": "desync_core.archive.plugin",
    "core_seeds": "desync_core.seeds.plugin",
    "core_commands": "desync_core.cli.commands",
}
#: Built-ins that cannot be disabled.
ESSENTIAL_PLUGINS = frozenset({"core_stores", "core_commands"})


@dataclass
class PluginInfo:
    """What ``desync plugins`` reports about one plugin."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    builtin: bool = False
    error: str = ""
    blocked: bool = False
    provides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registries:
    """Every registry, filled by all loaded plugins."""

    chunk_stores: Registry
    index_stores: Registry
    archive_formats: Registry
    seed_types: Registry
    commands: CommandRegistry
    config_sections: Registry = field(default_factory=lambda: Registry("config section"))


class DesyncPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers plugin metadata and load failures."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registries: Registries | None = None
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------

    def is_blocked(self, name: str) -> bool:
        """Blocked through pluggy or ``DESYNC_DISABLE_PLUGINS`` (essentials never are)."""
        raw = os.environ.get("DESYNC_DISABLE_PLUGINS", "")
        disabled = {p.strip() for p in raw.split(",") if p.strip()} - ESSENTIAL_PLUGINS
        return name in disabled or super().is_blocked(name)

    def register_builtin(self, name: str, module: str) -> None:
        """Register one built-in plugin module."""
        self.infos[name] = PluginInfo(name=name, module=module, builtin=True,
                                      distribution="desync-core", version=_core_version())
        if self.is_blocked(name):
            self.infos[name].blocked = True
            return
        self.register(importlib.import_module(module), name=name)

    def load_entrypoints(self) -> None:
        """Load every plugin of the ``desync`` entry-point group, recording failures."""
        allow = os.environ.get("DESYNC_LOAD_PLUGINS")
        allowed = None if allow is None else {p.strip() for p in allow.split(",") if p.strip()}
        for ep in find_entry_points(PROJECT):
            if ep.name in self.infos:
                continue
            info = PluginInfo(name=ep.name, module=ep.value, distribution=ep.distribution,
                              version=ep.version)
            self.infos[ep.name] = info
            if self.is_blocked(ep.name) or (allowed is not None and ep.name not in allowed):
                info.blocked = True
                continue
            self._load_one(ep, info)

    def _load_one(self, ep: PluginEntryPoint, info: PluginInfo) -> None:
        try:
            plugin = ep.load()
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            return
        self.register_checked(plugin, ep.name)

    def register_checked(self, plugin: object, name: str) -> bool:
        """Register a plugin object unless its hooks are invalid (then disable it).

        Invalid: a ``desync_``-prefixed attribute that names no hook (a misspelling
        would otherwise be silently ignored, or fail every command at
        ``check_pending``), or an implementation pluggy rejects (wrong arguments).
        """
        info = self.infos.setdefault(name, PluginInfo(name=name, module=repr(plugin)))
        unknown = sorted(attr for attr in dir(plugin)
                         if attr.startswith(f"{PROJECT}_") and callable(getattr(plugin, attr, None))
                         and self.parse_hookimpl_opts(plugin, attr) is not None
                         and not hasattr(self.hook, attr))
        if unknown:
            self._disable(info, f"unknown hook {', '.join(unknown)}")
            return False
        try:
            self.register(plugin, name=name)
        except Exception as exc:  # pluggy.PluginValidationError and anything odd
            self._disable(info, f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _disable(self, info: PluginInfo, reason: str) -> None:
        reason = " ".join(reason.split())  # one line (pluggy's messages span several)
        info.error = f"disabled: {reason}"
        sys.stderr.write(f"Warning: plugin {info.name} disabled: {reason}\n")

    # -- registries ------------------------------------------------------------

    def registries(self) -> Registries:
        """Build (once) and return the registries filled by every loaded plugin."""
        with self._lock:
            if self._registries is None:
                self._registries = self._build_registries()
            return self._registries

    def _build_registries(self) -> Registries:
        regs = Registries(
            chunk_stores=Registry("chunk store"),
            index_stores=Registry("index store"),
            archive_formats=Registry("archive format"),
            seed_types=Registry("seed type"),
            commands=CommandRegistry(),
        )
        errors = {name: info.error for name, info in self.infos.items() if info.error}
        pairs: list[tuple[str, Registry | CommandRegistry]] = [
            ("desync_register_chunk_stores", regs.chunk_stores),
            ("desync_register_index_stores", regs.index_stores),
            ("desync_register_archive_formats", regs.archive_formats),
            ("desync_register_seed_types", regs.seed_types),
            ("desync_register_config_sections", regs.config_sections),
            ("desync_add_commands", regs.commands),
        ]
        for _, registry in pairs:
            if isinstance(registry, Registry):
                registry.load_errors = errors
        for name, plugin in list(self.list_name_plugin()):
            for hook_name, registry in pairs:
                if not self._call_one(name, plugin, hook_name, registry):
                    for _, reg in pairs:  # nothing of a disabled plugin stays
                        reg.drop_plugin(name)
                    errors[name] = self.infos[name].error
                    break
        for name, info in self.infos.items():
            info.provides = {
                "chunk stores": regs.chunk_stores.by_plugin(name),
                "index stores": regs.index_stores.by_plugin(name),
                "archive formats": regs.archive_formats.by_plugin(name),
                "seed types": regs.seed_types.by_plugin(name),
                "config sections": regs.config_sections.by_plugin(name),
                "commands": regs.commands.by_plugin(name),
            }
        return regs

    def _call_one(self, name: str, plugin: object, hook_name: str,
                  registry: Registry | CommandRegistry) -> bool:
        """Call one plugin's register hook through pluggy; False if it raised (the
        plugin is then disabled)."""
        caller = getattr(self.hook, hook_name)
        if not any(impl.plugin is plugin for impl in caller.get_hookimpls()):
            return True
        others = [p for p in self.get_plugins() if p is not plugin]
        argname = caller.spec.argnames[0] if caller.spec else "registry"
        registry.current_plugin = name
        try:
            self.subset_hook_caller(hook_name, remove_plugins=others)(**{argname: registry})
        except Exception as exc:
            info = self.infos.setdefault(name, PluginInfo(name=name, module=repr(plugin)))
            self._disable(info, f"{hook_name} failed: {type(exc).__name__}: {exc}")
            self.unregister(plugin)
            return False
        finally:
            registry.current_plugin = "?"
        return True


@dataclass
class PluginEntryPoint:
    """One entry point of an installed distribution."""

    name: str
    value: str  # ``module`` or ``module:attribute``
    distribution: str = ""
    version: str = ""

    def load(self) -> Any:
        """Import the module (and get the attribute) the entry point names."""
        module, _, attr = self.value.partition(":")
        obj = importlib.import_module(module.strip())
        for part in attr.split("[", 1)[0].strip().split(".") if attr else ():
            obj = getattr(obj, part)
        return obj


def find_entry_points(group: str) -> list[PluginEntryPoint]:
    """The entry points of ``group`` of the distributions on ``sys.path``.

    The same result as :func:`importlib.metadata.entry_points` (the first distribution
    of a name on the path wins) for distributions installed as ``*.dist-info`` or
    ``*.egg-info`` directories, read directly: importing :mod:`importlib.metadata`
    alone costs ~20 ms, a tenth of a short command's start-up. Anything else (a path
    entry that is an archive, an import hook with its own finder) goes through
    :mod:`importlib.metadata`.
    """
    found: list[PluginEntryPoint] = []
    seen: set[str] = set()
    for entry in sys.path:
        path = entry or "."
        if not os.path.isdir(path):
            if os.path.exists(path):
                return _entry_points_from_metadata(group)
            continue
        try:
            names = os.listdir(path)
        except OSError:
            continue
        for dirname in names:
            stem, dot, suffix = dirname.rpartition(".")
            if not dot or suffix not in ("dist-info", "egg-info"):
                continue
            # named by the directory, as importlib.metadata does: "name-version.dist-info"
            key = _normalise(stem.split("-", 1)[0])
            if key in seen:
                continue
            seen.add(key)
            dist_dir = os.path.join(path, dirname)
            try:
                with open(os.path.join(dist_dir, "entry_points.txt"), encoding="utf-8") as f:
                    pairs = _parse_group(f.read(), group)
            except OSError:
                continue
            if pairs:
                dist_name, version = _read_metadata(dist_dir, suffix)
                found += [PluginEntryPoint(name, value, dist_name, version)
                          for name, value in pairs]
    if any(hasattr(finder, "find_distributions") and finder is not PathFinder
           for finder in sys.meta_path):
        return _entry_points_from_metadata(group)  # another finder may add distributions
    return found


def _read_metadata(dist_dir: str, suffix: str) -> tuple[str, str]:
    """``(Name, Version)`` from a distribution directory's metadata headers."""
    filename = "METADATA" if suffix == "dist-info" else "PKG-INFO"
    name = version = ""
    try:
        with open(os.path.join(dist_dir, filename), encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # end of the headers
                key, _, value = line.partition(":")
                if key == "Name":
                    name = value.strip()
                elif key == "Version":
                    version = value.strip()
    except OSError:
        pass
    return name, version


def _normalise(name: str) -> str:
    """PEP 503 normalisation, as distribution names are compared."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse_group(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` lines of section ``[group]`` of an entry_points.txt."""
    out = []
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            continue
        if current == group and "=" in line:
            name, _, value = line.partition("=")
            out.append((name.strip(), value.strip()))
    return out


def _entry_points_from_metadata(group: str) -> list[PluginEntryPoint]:
    from importlib.metadata import entry_points

    return [PluginEntryPoint(ep.name, ep.value,
                             (ep.dist.metadata["Name"] or "") if ep.dist else "",
                             ep.dist.version if ep.dist else "")
            for ep in entry_points(group=group)]


def _core_version() -> str:
    from desync_core import __version__

    return __version__


def make_plugin_manager(*, load_entrypoints: bool = True) -> DesyncPluginManager:
    """Create a fresh plugin manager with the built-ins (and, by default, entry points)."""
    pm = DesyncPluginManager()
    for name, module in DEFAULT_PLUGINS.items():
        pm.register_builtin(name, module)
    if load_entrypoints:
        pm.load_entrypoints()
    if os.environ.get("DESYNC_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


_manager: DesyncPluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> DesyncPluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = make_plugin_manager()
        return _manager


def set_plugin_manager(pm: DesyncPluginManager | None) -> None:
    """Replace the process-wide manager (tests use this with a fresh manager)."""
    global _manager
    with _manager_lock:
        _manager = pm


def get_registries() -> Registries:
    """Registries of the process-wide plugin manager."""
    return get_plugin_manager().registries()


__all__ = [
    "DEFAULT_PLUGINS",
    "ESSENTIAL_PLUGINS",
    "DesyncPluginManager",
    "PluginInfo",
    "Registries",
    "get_plugin_manager",
    "get_registries",
    "make_plugin_manager",
    "set_plugin_manager",
]
