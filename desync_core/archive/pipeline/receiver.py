"""The writer process's side of the pipeline: batches from the pipe turned back into a
node stream (contents read from the shared ring by offset), each acknowledged once
consumed."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from desync_core.archive.base import DIR_END, DirEnd, Node, Payload, PlainFile
from desync_core.archive.pipeline.forking import ABORT, ACK, END, LEN, S_IFMT, S_IFREG
from desync_core.engine.errors import Aborted
from desync_core.engine.forks import MSG


class _RingPayload(Payload):
    """A content whose pieces follow its record in the record stream."""

    __slots__ = ("receiver", "remaining", "size")

    def __init__(self, receiver: _Receiver, size: int) -> None:
        self.receiver = receiver
        self.size = size
        self.remaining = size

    def blocks(self) -> Iterator[memoryview | bytes]:
        while self.remaining:
            piece = self.receiver.piece()
            self.remaining -= len(piece)
            yield piece


class _Receiver:
    """Reads batches from the pipe and turns them back into a node stream."""

    def __init__(self, data_fd: int, status_fd: int, ring: memoryview) -> None:
        self.data = os.fdopen(data_fd, "rb", buffering=1 << 16)
        self.status_fd = status_fd
        self.ring = ring
        self.seq = -1
        self.records: Iterator[Any] = iter(())

    def next_batch(self) -> bool:
        """Acknowledge the batch consumed so far and load the next (False at the end)."""
        if self.seq >= 0:
            os.write(self.status_fd, MSG.pack(ACK, self.seq))
        head = self.data.read(8)
        if len(head) < 8:
            raise Aborted
        (n,) = LEN.unpack(head)
        if n == END:
            return False
        if n == ABORT:
            raise Aborted
        body = self.data.read(n)
        if len(body) < n:
            raise Aborted
        self.seq += 1
        self.records = iter(pickle.loads(body))
        return True

    def piece(self) -> memoryview | bytes:
        """The next piece of the content being read: ``(offset, length)`` or bytes."""
        for piece in self.records:
            if type(piece) is bytes:
                return piece
            off, n = piece
            return self.ring[off:off + n]
        if not self.next_batch():
            raise Aborted  # cannot end inside a file's content
        return self.piece()

    def nodes(self) -> Iterator[Node | DirEnd | PlainFile]:
        """The node stream that was sent (plain files as PlainFile tuples)."""
        ring = self.ring
        if not self.next_batch():
            return
        while True:
            records = self.records
            for record in records:
                if record is None:
                    yield DIR_END
                    continue
                payload = None
                if type(record) is tuple:
                    name, path, mode, uid, gid, mtime, size, ref = record
                    if ref is not None:  # a plain file, its content in one piece
                        if type(ref) is bytes:
                            yield (name, path, mode, uid, gid, mtime, ref, 0, size)
                        else:
                            yield (name, path, mode, uid, gid, mtime, ring, ref, size)
                        continue
                    node = Node(mode, name, path, uid, gid, mtime)
                    if size:
                        node.size = size
                        payload = node.payload = _RingPayload(self, size)
                else:
                    node = record
                    if (isinstance(node, Node) and node.size
                            and node.mode & S_IFMT == S_IFREG):
                        payload = node.payload = _RingPayload(self, node.size)
                yield node
                if payload is not None and payload.remaining:
                    for _ in payload.blocks():  # what the consumer left unread
                        pass
                if self.records is not records:
                    break  # the content went on into the next batch
            else:
                if not self.next_batch():
                    return


def writer_body(consume: Callable[[Iterable[Any]], None], data_fd: int, status_fd: int,
                 ring: memoryview) -> Callable[[], None]:
    """What the writer process runs: consume what arrives."""
    return lambda: consume(_Receiver(data_fd, status_fd, ring).nodes())


__all__ = ["writer_body"]
