"""Re-index a seed's data in memory (``--regenerate-invalid-seeds``, ``extract.md`` §4).

The data is chunked again with the chunk sizes of the seed's (wrong) index, in
parallel, and every chunk hashed. The new index replaces the old one for this run
only: nothing on disk is modified.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from desync_core.engine.threads import Threads
from desync_core.errors import SeedInvalidError
from desync_core.seeds.extents import pread_exact

if TYPE_CHECKING:
    from desync_core.index import Index
    from desync_core.progress import Progress

#: Bytes hashed per task.
HASH_TASK_BYTES = 8 * 1024 * 1024


def index_file(path: str, like: Index, *, workers: int, progress: Progress) -> Index:
    """The index of ``path`` chunked with ``like``'s sizes, digest and flags.

    Args:
        path: the seed's data (file or block device).
        like: the index whose parameters to reuse.
        workers: chunking processes and hashing threads.
        progress: receives bytes hashed (its total is set to the data size).
    """
    from desync_core.chunker import chunk_file
    from desync_core.index import Index
    from desync_core.workers import default_workers

    try:
        ends = chunk_file(path, like.params, workers=max(1, min(workers, default_workers())))
    except OSError as exc:
        raise SeedInvalidError(f"chunking seed {path}: {exc.strerror or exc}") from exc
    total = int(ends[-1]) if len(ends) else 0
    progress.set_total(total)
    starts = np.zeros(len(ends), dtype=np.int64)
    starts[1:] = ends[:-1]
    ids = bytearray(32 * len(ends))
    digest = like.digest.sum
    tasks: list[tuple[int, int]] = []
    i = 0
    while i < len(ends):
        stop = int(np.searchsorted(ends, int(starts[i]) + HASH_TASK_BYTES, side="right"))
        stop = min(max(stop, i + 1), len(ends))
        tasks.append((i, stop))
        i = stop
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        def hash_task(task: tuple[int, int]) -> None:
            lo, hi = task
            base = int(starts[lo])
            view = memoryview(bytearray(int(ends[hi - 1]) - base))
            try:
                pread_exact(fd, view, base)
            except EOFError:
                raise SeedInvalidError(f"seed {path} changed while it was being chunked") from None
            for k in range(lo, hi):
                chunk = view[int(starts[k]) - base : int(ends[k]) - base]
                ids[32 * k : 32 * k + 32] = digest(chunk)
            progress.update(len(view))

        with Threads(min(workers, default_workers())) as pool:
            list(pool.map(hash_task, tasks))
    finally:
        os.close(fd)
    return Index(like.feature_flags, like.chunk_size_min, like.chunk_size_avg,
                 like.chunk_size_max, np.asarray(ends, dtype=np.int64), bytes(ids))


__all__ = ["index_file"]
