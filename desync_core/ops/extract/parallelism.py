"""How many worker threads and forked worker processes ``extract``'s assembly uses for a
store chain and its seeds (the workers themselves: :mod:`desync_core.engine`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from desync_core.seeds.base import Seed


def assembly_threads(source: Any, workers: int) -> int:
    """Worker threads for the assembly: ``-n``, but at most one per CPU plus one when
    every store is local.

    Local fetches are CPU-bound (decompression, hashing); threads beyond the cores only
    contend for the interpreter lock. Remote stores keep ``-n`` requests in flight.
    """
    from desync_core.stores.wrappers import iter_members
    from desync_core.workers import default_workers

    members = list(iter_members(source))
    if members and all(getattr(m, "is_local", False) for m in members):
        return max(1, min(workers, default_workers() + 1))
    return max(1, workers)


def assembly_processes(source: Any, workers: int, seeds: Sequence[Seed]) -> int:
    """Worker processes for the first assembly phase: one per CPU (at most ``-n``) when
    every store and every seed declares ``fork_safe`` (and the stores ``is_local``);
    else 1 (threads only).

    Remote stores are waited for, not computed on, and their connections must not be
    shared by several processes; seeds may hold such connections too.
    """
    from desync_core.stores.wrappers import iter_members
    from desync_core.workers import default_workers

    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return 1
    if not all(getattr(seed, "fork_safe", False) for seed in seeds):
        return 1
    members = list(iter_members(source))
    if not members or not all(getattr(m, "fork_safe", False) and getattr(m, "is_local", False)
                              for m in members):
        return 1
    # More processes than CPUs was measured slower (3 and 4 on 2 CPUs: more CPU time,
    # no shorter runs).
    return max(1, min(workers, default_workers()))


__all__ = ["assembly_processes", "assembly_threads"]
