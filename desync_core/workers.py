"""Worker processes for CPU-bound work (``chop`` and ``verify-index`` hashing).

``make`` does not use them: its chunking kernel, hashlib and zstandard release the GIL,
so it runs in threads (see :mod:`desync_core.ops.make`). ``extract`` forks its own
lighter workers (:class:`desync_core.ops.extract.ForkedWorkers`: task numbers over a
pipe, no pickling, no executor threads).

On Linux the pool forks: children inherit the imported modules and start in
milliseconds, where ``spawn`` would re-import numpy (and the store plugins) in every
worker. Forking is safe here because pools are created before the operation starts any
thread; elsewhere ``spawn`` is used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import multiprocessing.context
    from concurrent.futures import ProcessPoolExecutor

# multiprocessing and concurrent.futures are imported when a pool is made: commands that
# only ask for default_workers() (make, extract) save ~3.5 ms of start-up.


def default_workers() -> int:
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _context() -> multiprocessing.context.BaseContext:
    import multiprocessing

    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")  # pragma: no cover


@contextmanager
def process_pool(
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A process pool of ``workers`` processes.

    ``initializer(*initargs)`` runs once in each worker (e.g. to open a store).
    """
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=max(1, workers), mp_context=_context(),
                               initializer=initializer, initargs=initargs)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["default_workers", "process_pool"]
