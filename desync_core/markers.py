"""pluggy markers shared by the core and by plugins.

A plugin module declares implementations with ``@hookimpl`` and is found through the
``desync`` entry-point group::

    [project.entry-points.desync]
    store_example = "desync_store_example.plugin"
"""

from __future__ import annotations

import pluggy

#: pluggy project name, also the entry-point group.
PROJECT = "desync"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]
