"""The pipeline's protocol between the decoding process and its forked children (the
writer, the fetcher, the chunk workers): message tags, batch framing, and the node
fields that travel. Forking, the error transport and interrupts are the engine's
(:mod:`desync_core.engine`)."""

from __future__ import annotations

import fcntl
import struct

from desync_core.archive.base import Node
from desync_core.engine.forks import DONE, RESULT

S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
#: The length of a batch (or task) that follows on a data pipe, or END / ABORT.
LEN = struct.Struct("<Q")
END = 0
ABORT = (1 << 64) - 1
# writer -> here: batch acknowledged, done (the engine's DONE); fetcher -> here:
# produced; chunk worker -> here: the ids of a run (the engine's RESULT, payload: seq +
# ids); errors: the engine's ERROR messages
ACK, PRODUCED = b"A", b"P"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
NODE_FIELDS = tuple(Node.__dataclass_fields__)

__all__ = ["ABORT", "ACK", "DONE", "END", "F_SETPIPE_SZ", "LEN", "NODE_FIELDS", "PRODUCED",
           "RESULT", "S_IFDIR", "S_IFMT", "S_IFREG"]
