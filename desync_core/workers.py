"""How many workers this process may use (:func:`default_workers`).

The workers themselves - threads and forked processes, for ``make``, ``extract``,
``untar``, ``tar -i``, ``chop`` and ``verify-index`` - are the execution engine's
(:mod:`desync_core.engine`).
"""

from __future__ import annotations

import os


def default_workers() -> int:
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


__all__ = ["default_workers"]
