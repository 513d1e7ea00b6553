"""The execution engine: how the core runs work in parallel, for ``make``, ``extract``,
``untar``, ``tar -i``, ``chop`` and ``verify-index``.

* threads - :class:`ThreadPool` (a stream of tasks, per-thread state, bounded queue)
  and :class:`Threads` (an ``Executor``), :mod:`desync_core.engine.threads`;
* forked processes - :class:`ForkPool` (numbered tasks over a pipe, results on one
  pipe per worker) and :class:`ForkExecutor` (an ``Executor`` front of it),
  :mod:`desync_core.engine.forkpool`; :func:`fork` for workers with a protocol of their
  own (the archive pipeline's writer, fetcher and chunk workers) and :class:`Messages`
  to read what they report, :mod:`desync_core.engine.forks`. Workers inherit the work
  (no pickling on the way in);
* one error transport - an exception raised in a forked worker is raised in the parent
  with its class, message and exit code; a worker that dies is a
  :class:`WorkerDiedError` saying how (:mod:`desync_core.engine.errors`);
* one interrupt handling - SIGINT/SIGTERM go to the parent, which kills its workers,
  drops queued tasks and lets its callers remove partial output; workers ignore
  them and die with their parent (:mod:`desync_core.engine.interrupts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from desync_core.engine.errors import (
        Aborted,
        ChildError,
        WorkerDiedError,
        pack_error,
        unpack_error,
    )
    from desync_core.engine.forkpool import ForkExecutor, ForkPool
    from desync_core.engine.forks import Messages, can_fork, fork, kill, reap
    from desync_core.engine.interrupts import (
        CANCEL_GRACE_SECONDS,
        hold_interrupts,
        release_interrupts,
    )
    from desync_core.engine.threads import ThreadPool, Threads

# The names are loaded from their modules on first use: a command that needs only the
# fork primitives does not import concurrent.futures or numpy with the pools.
_MODULES = {
    "Aborted": "errors", "ChildError": "errors", "WorkerDiedError": "errors",
    "pack_error": "errors", "unpack_error": "errors",
    "ForkExecutor": "forkpool", "ForkPool": "forkpool",
    "Messages": "forks", "can_fork": "forks", "fork": "forks", "kill": "forks",
    "reap": "forks",
    "CANCEL_GRACE_SECONDS": "interrupts", "hold_interrupts": "interrupts",
    "release_interrupts": "interrupts",
    "ThreadPool": "threads", "Threads": "threads",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "CANCEL_GRACE_SECONDS",
    "Aborted",
    "ChildError",
    "ForkExecutor",
    "ForkPool",
    "Messages",
    "ThreadPool",
    "Threads",
    "WorkerDiedError",
    "can_fork",
    "fork",
    "hold_interrupts",
    "kill",
    "pack_error",
    "reap",
    "release_interrupts",
    "unpack_error",
]
