"""``tar -i``: chunks cut in a shared ring, hashed, compressed and stored by forked
worker processes (:class:`ChunkWorkers`)."""

from __future__ import annotations

import mmap
import os
import pickle
import select
from collections import deque
from collections.abc import Callable
from typing import Any

from desync_core.archive.pipeline import limits
from desync_core.archive.pipeline.forking import LEN, RESULT
from desync_core.engine.errors import died
from desync_core.engine.forks import ERROR, MSG, Messages, fork, kill, reap, write_all


def _chunk_worker(make_sink: Callable[[], Any], ring: memoryview, task_fd: int,
                  result_fd: int) -> Callable[[], None]:
    """A chunk worker's body: hash (and store) the runs of chunks it is sent."""

    def work() -> None:
        import numpy as np

        sink = make_sink()
        tasks = os.fdopen(task_fd, "rb", buffering=1 << 16)
        while True:
            head = tasks.read(8)
            if len(head) < 8:
                return  # the chunking process is done (or gone)
            (n,) = LEN.unpack(head)
            seq, run = pickle.loads(tasks.read(n))
            spans = np.array(run, dtype=np.int64).reshape(-1, 2)
            ids = sink.process_spans(ring, np.ascontiguousarray(spans[:, 0]),
                                     np.ascontiguousarray(spans[:, 1]))
            payload = LEN.pack(seq) + ids
            write_all(result_fd, MSG.pack(RESULT, len(payload)) + payload)

    return work


class ChunkWorkers:
    """Chunk a stream here, hash and store the chunks in forked worker processes.

    ``tar -i`` does three kinds of work: producing the archive stream (walking the tree,
    encoding), cutting it into chunks, and hashing, compressing and storing the chunks.
    In threads of one process they keep taking the GIL from each other; here the stream
    is cut into blocks of a shared ring, and runs of chunks (about :data:`RUN_BYTES`)
    go to ``processes`` workers as ring offsets, which reply with the chunk ids.

    Args:
        make_sink: called in each worker to make its ``ChunkSink`` (for remote stores
            with its own I/O threads).
        processes: number of workers.

    Fork only where :func:`desync_core.engine.can_fork` says so.
    """

    def __init__(self, make_sink: Callable[[], Any], processes: int, params: Any) -> None:
        self.make_sink = make_sink
        self.processes = max(1, processes)
        self.params = params
        # a block is limits.BLOCK_MAX bytes plus the longest chunk; four blocks fit in the ring
        self.block_size = limits.BLOCK_MAX
        self.ring_size = max(limits.RING_SIZE, 4 * (limits.BLOCK_MAX + params.longest_chunk))
        self._ring: memoryview | None = None
        self._map: mmap.mmap | None = None
        self._pids: list[int] = []
        self._task_fds: list[int] = []
        self._results: list[Messages] = []
        self._finished = False

    def start(self) -> None:
        """Make the ring and fork the workers."""
        self._map = mmap.mmap(-1, self.ring_size)
        self._ring = memoryview(self._map)
        for _ in range(self.processes):
            task_r, task_w = os.pipe()
            result_r, result_w = os.pipe()
            # (other workers' pipes are closed too: a worker sees its task pipe end
            # only when every writer closed it)
            pid = fork(_chunk_worker(self.make_sink, self._ring, task_r, result_w),
                       report_fd=result_w,
                       close=[task_w, result_r, *self._task_fds,
                              *(m.fd for m in self._results)])
            os.close(task_r)
            os.close(result_w)
            self._pids.append(pid)
            self._task_fds.append(task_w)
            self._results.append(Messages(result_r, RESULT, "a chunk worker"))

    def close(self) -> None:
        """Stop the workers and reap them: after a complete :meth:`run` they end when
        their task pipe closes; else (an error, an interrupt) they are killed."""
        if not self._finished:
            for pid in self._pids:
                if pid:
                    kill(pid)
        for fd in self._task_fds:
            os.close(fd)
        self._task_fds = []
        for messages in self._results:
            messages.close()
        self._results = []
        for pid in self._pids:
            if pid:
                reap(pid)
        self._pids = []
        self._ring = None
        self._map = None

    def run(self, readinto: Callable[[memoryview], int | None]) -> tuple[list[int], bytes,
                                                                         bytes]:
        """Chunk the stream ``readinto`` produces; ``(chunk ends, ids, first bytes)``.

        The first bytes (up to 64) of the stream tell the index which kind of content
        it holds. Errors of the workers (a store that fails) are raised here.
        """
        from desync_core.chunker import fill_from, find_cuts

        ring = self._ring
        assert ring is not None
        params = self.params
        ring_size = self.ring_size
        cap = self.block_size + params.longest_chunk
        ends: list[int] = []
        results: dict[int, bytes] = {}
        ids: list[bytes] = []
        first = b""
        # ring space: virtual positions; what runs in flight use, and what is unread
        inflight: deque[tuple[int, int]] = deque()  # (seq, lowest position) in order
        alloc = 0
        seq = 0
        next_id_seq = 0
        tail_pos, tail_len = 0, 0
        offset = 0  # stream offset of the current block's first byte
        eof = False

        def gone(k: int) -> BaseException:
            pid = self._pids[k]
            status = reap(pid)
            self._pids[k] = 0
            return died("a chunk worker", status)

        def collect(block: bool) -> None:
            nonlocal next_id_seq
            fds = [m.fd for m in self._results if not m.eof]
            if block and fds:
                select.select(fds, [], [])
            for k, messages in enumerate(self._results):
                for tag, value in messages.read():
                    if tag == ERROR:
                        raise value
                    if tag == RESULT:
                        results[LEN.unpack_from(value)[0]] = value[8:]
                if messages.eof and inflight:
                    raise gone(k)
            while next_id_seq in results:
                ids.append(results.pop(next_id_seq))
                next_id_seq += 1
            while inflight and inflight[0][0] < next_id_seq:
                inflight.popleft()

        def send(run: list[tuple[int, int]], low: int) -> None:
            nonlocal seq
            data = pickle.dumps((seq, run), protocol=pickle.HIGHEST_PROTOCOL)
            fd = self._task_fds[seq % self.processes]
            view = memoryview(LEN.pack(len(data)) + data)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except BrokenPipeError:
                # The worker is gone (a store error ends it): its report says why.
                while not all(m.eof for m in self._results):
                    collect(block=True)
                raise gone(seq % self.processes) from None
            inflight.append((seq, low))
            seq += 1

        while not eof:
            # a block: the previous tail, then new data, contiguous in the ring
            start = alloc
            pos = start % ring_size
            if pos + cap > ring_size:
                start += ring_size - pos
                pos = 0
            while inflight and start + cap - inflight[0][1] > ring_size:
                collect(block=True)
            collect(block=False)
            alloc = start + cap
            view = ring[pos:pos + cap]
            if tail_len:
                t = tail_pos % ring_size
                view[:tail_len] = ring[t:t + tail_len]
            n, eof = fill_from(readinto, view, tail_len)
            if n == 0:
                break
            if not first:
                first = bytes(view[:64])
            cuts = find_cuts(view, params, eof=eof, length=n).tolist()
            prev = 0
            run: list[tuple[int, int]] = []
            run_bytes = 0
            for cut in cuts:
                run.append((pos + prev, cut - prev))
                run_bytes += cut - prev
                ends.append(offset + cut)
                prev = cut
                if run_bytes >= RUN_BYTES:
                    send(run, start)
                    run, run_bytes = [], 0
            if run:
                send(run, start)
            offset += prev
            tail_pos, tail_len = start + prev, n - prev
        while inflight:
            collect(block=True)
        self._finished = True
        return ends, b"".join(ids), first


#: ``tar -i`` hands a worker this many bytes of chunks at a time.
RUN_BYTES = 1 << 20


