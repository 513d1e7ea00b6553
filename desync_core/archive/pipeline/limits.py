"""Sizes of the multi-process pipeline (a module of their own so tests can shrink them)."""

from __future__ import annotations

#: Size of the shared ring for the archive stream.
RING_SIZE = 32 << 20
#: Largest block of the ring handed to the decoder at once.
BLOCK_MAX = 1 << 20
#: A batch is sent once it holds this many records or refers to this many bytes ...
BATCH_RECORDS = 128
BATCH_BYTES = 2 << 20
#: ... and the first batches are smaller, so that the writer starts early.
FIRST_BATCH_RECORDS = 8
#: With a director, plain files are written here while the writer has this many batches
#: to do (the one it works on included).
BUSY_BATCHES = 3
#: Chunks larger than this are fetched into a private buffer and copied into the ring.
DIRECT_MAX = RING_SIZE // 4
#: The fetcher hands this many bytes of consecutive chunks to a thread at once.
GROUP_BYTES = 1 << 20

