"""Extraction in several processes: one decodes, a forked child writes the files, and for
an index another one fetches the chunks.

Unpacking a tree is made of kinds of work of similar size: fetching and verifying
chunks (for ``untar -i``: hashing, decompressing), decoding the archive (Python, per
element) and creating files (system calls, per file). One process does them one after
the other, and threads do not help much, because they keep handing the GIL to each
other. :class:`ForkedWriter` forks a *writer* that runs an ordinary sequential consumer
(e.g. :meth:`DiskWriter.write <desync_core.archive.disk.DiskWriter.write>`) on the node
stream this process produces, and for an index a *fetcher* that puts the stream the
index describes into shared memory, so the work runs side by side.

Transport:

* the archive stream lives in a shared memory ring (an anonymous shared mapping made
  before the forks): a catar file is read into it here (:meth:`ForkedWriter.reader`),
  an index's chunks are decoded into it by the fetcher, verified against their ids,
  in order, with ``-n`` requests in flight (:meth:`ForkedWriter.fetcher`);
* nodes go to the writer through a pipe in pickled batches: a plain file as a small
  tuple whose content is a ring offset (no copy: the decoder hands out regions of the
  ring, see :data:`~desync_core.archive.base.PlainFile` and :meth:`Payload.regions
  <desync_core.archive.base.Payload.regions>`), anything else as its :class:`Node`,
  :data:`DIR_END` as ``None``; contents that are not in the ring travel inline;
* the writer acknowledges every batch it has consumed; ring space is reused only after
  that, and only once the decoder has moved on, so the reading side waits when the
  writer falls behind (the fetcher is given "credit" up to which it may fill the ring).

The writer consumes the records in order and stops at its first error, so the outcome
is that of sequential extraction: everything before the failing element is written,
nothing after it. An error of the writer (a file that cannot be created...) or of the
fetcher (a missing or invalid chunk...) is sent here and raised as it is (the
engine's error transport, :mod:`desync_core.engine`, which also forks the children and
handles interrupts: they stop both children at once). An error here
(a malformed archive...) lets the writer finish what it was sent, then it is raised,
unless the writer failed first.
"""

from __future__ import annotations

from desync_core.archive.pipeline import limits
from desync_core.archive.pipeline.chunk_workers import ChunkWorkers
from desync_core.archive.pipeline.writer import ForkedWriter

__all__ = ["ChunkWorkers", "ForkedWriter", "limits"]
