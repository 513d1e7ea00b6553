"""Built-in plugin: file seeds (``--seed``, ``--seed-dir``)."""

from __future__ import annotations

from desync_core.markers import hookimpl
from desync_core.registry import Registry


@hookimpl
def desync_register_seed_types(registry: Registry) -> None:
    """File seeds: an index plus the blob it describes."""
