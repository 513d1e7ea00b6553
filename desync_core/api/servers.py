"""``chunk-server`` and ``index-server`` as calls that return a running server.

The servers are not part of the core: the ``desync-store-http`` plugin provides the
commands. The core never imports a plugin package by name; it looks the command up in
the command registry (exactly as ``desync chunk-server`` does, so a missing plugin gives
the same "needs the desync-store-http plugin (pip install …)" error) and calls the
function of the same name (``-`` as ``_``) in the ``api`` module next to the module
that registered the command: for ``desync_store_http.plugin`` that is
``desync_store_http.api.chunk_server``. Any plugin's command can offer a Python call
the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from desync_core.api._base import context
from desync_core.api.results import Server
from desync_core.context import Context
from desync_core.errors import PluginError, UnknownSchemeError


def command_api(name: str) -> Callable[..., Any]:
    """The Python call a plugin offers for its command ``name``.

    Raises:
        UnknownSchemeError: no installed plugin provides the command (the message names
            the package to install when it is one of this repository's plugins).
        PluginError: the plugin's command has no Python API.
    """
    from desync_core.plugins import get_registries
    from desync_core.registry import KNOWN_PLUGINS, missing_plugin_message

    registries = get_registries()
    command = registries.commands.commands.get(name)
    if command is None:
        dist = KNOWN_PLUGINS["command"].get(name)
        if dist:
            raise UnknownSchemeError(missing_plugin_message(
                f"the {name} command", dist, registries.chunk_stores.load_errors))
        raise UnknownSchemeError(f"no installed plugin provides the {name} command")
    module_name = getattr(command.run, "__module__", None) or ""
    package = module_name.rpartition(".")[0] or module_name
    attr = name.replace("-", "_")
    if not package:
        raise PluginError(f"plugin {command.plugin!r} provides the {name} command but no "
                          "Python API")
    try:
        module = importlib.import_module(f"{package}.api")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.api":
            raise
        raise PluginError(f"plugin {command.plugin!r} provides the {name} command but no "
                          f"Python API (no module {package}.api)") from None
    call = getattr(module, attr, None)
    if not callable(call):
        raise PluginError(f"plugin {command.plugin!r} has no {package}.api.{attr}")
    return cast("Callable[..., Any]", call)


def chunk_server(stores: str | Sequence[str] = (), *, cache: str | None = None,
                 listen: str | Sequence[str] = "127.0.0.1:0", writable: bool = False,
                 store_file: str | None = None, verify_read: bool = False,
                 uncompressed: bool = False, encryption: bool = False,
                 encryption_key: str = "", encryption_algorithm: str = "",
                 authorization: str | None = None, cert: str = "", key: str = "",
                 client_ca: str = "", log: str = "", ctx: Context | None = None) -> Server:
    """Start ``desync chunk-server`` in background threads; returns the running server.

    ::

        with api.chunk_server("/srv/store") as server:
            api.extract("x.caibx", "x", stores=[server.url])

    Args:
        stores: upstream store locations, asked in order (``A|B``: a failover group).
        cache: a cache store in front of them (read-only servers).
        listen: ``host:port`` address(es); port 0 picks a free port (see ``.port``).
        writable: accept PUT for a single upstream store.
        store_file: read stores and cache from this JSON file (``server.reload()``
            re-reads it).
        verify_read: hash chunks read upstream (clients verify anyway).
        uncompressed: serve and accept uncompressed chunks (``-u``).
        encryption, encryption_key, encryption_algorithm: serve chunks encrypted.
        authorization: required ``Authorization`` header (default
            ``$DESYNC_HTTP_AUTH``, else none).
        cert, key: serve HTTPS; ``client_ca`` also requires client certificates.
        log: append one line per request to this file (``-``: stderr).
        ctx: settings (config file, store options); default
            :func:`~desync_core.api.context`.

    Raises:
        UnknownSchemeError: the ``desync-store-http`` plugin is not installed.
        UsageError: invalid flags, or an address cannot be bound.
    """
    start = command_api("chunk-server")
    return cast(Server, start(
        ctx or context(), [stores] if isinstance(stores, str) else list(stores),
        cache=cache or "", listen=[listen] if isinstance(listen, str) else list(listen),
        writable=writable, store_file=store_file or "", verify_read=verify_read,
        uncompressed=uncompressed, encryption=encryption, encryption_key=encryption_key,
        encryption_algorithm=encryption_algorithm, authorization=authorization, cert=cert,
        key=key, client_ca=client_ca, log=log))


def index_server(store: str, *, listen: str | Sequence[str] = "127.0.0.1:0",
                 writable: bool = False, authorization: str | None = None, cert: str = "",
                 key: str = "", client_ca: str = "", log: str = "",
                 ctx: Context | None = None) -> Server:
    """Start ``desync index-server`` in background threads; returns the running server.

    Args:
        store: the index store served (a directory or an index-store URL).
        listen, authorization, cert, key, client_ca, log, ctx: as for
            :func:`chunk_server`.
        writable: accept PUT of new indexes.

    Raises:
        UnknownSchemeError: the ``desync-store-http`` plugin is not installed.
        UsageError, StoreError: invalid flags, an address that cannot be bound, a
            store that is not a directory.
    """
    start = command_api("index-server")
    return cast(Server, start(
        ctx or context(), store, listen=[listen] if isinstance(listen, str) else list(listen),
        writable=writable, authorization=authorization, cert=cert, key=key,
        client_ca=client_ca, log=log))


__all__ = ["chunk_server", "command_api", "index_server"]
