"""Built-in plugin: the core's seed types, registered like a third-party plugin's.

Factories are ``"module:Class"`` strings so that loading plugins stays light (the seed
modules import numpy).
"""

from __future__ import annotations

from desync_core.markers import hookimpl
from desync_core.registry import Registry


@hookimpl
def desync_register_seed_types(registry: Registry) -> None:
    """File seeds (``--seed``, ``--seed-dir``), the null seed and the self-seed."""
    registry.add("file", "desync_core.seeds.file:FileSeedType",
                 "an index and the blob it describes (--seed X.caibx, --seed INDEX:DATA)")
    registry.add("null", "desync_core.seeds.null:NullSeedType",
                 "runs of all-zero chunks, written as holes (always used)")
    registry.add("self", "desync_core.seeds.selfseed:SelfSeedType",
                 "chunks already written to the output (always used)")
