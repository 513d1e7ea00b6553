"""The casync protocol's framing, shared by the ssh client and ``desync pull``.

``remote.md`` §4.2: every message is ``u64 size`` (whole message, header included),
``u64 type``, then ``size - 16`` bytes of body, little-endian. Both sides refuse
messages over 16 MiB (casync's ``CA_PROTOCOL_SIZE_MAX``) and check each message's shape
the way casync does, so a peer that is not casync fails on its first bytes instead of
making us allocate or wait for gigabytes.

Errors here are plain exceptions without a store name; the client and the server turn
them into the core's errors with their own wording.
"""

from __future__ import annotations

import os
import select
import struct
import time
from collections.abc import Sequence

# -- message types ------------------------------------------------------------------------
HELLO = 0x3C71D0948CA5FBEE
INDEX = 0xB32A91DD2B3E27F8
INDEX_EOF = 0x4F0932F1043718F5
ARCHIVE = 0x95D6428A69EDDCC5
ARCHIVE_EOF = 0x450BEF663F24CBAD
REQUEST = 0x8AB427E0F89D9210
CHUNK = 0x5213DD180A84BC8C
MISSING = 0xD010F9FAC82B7B6C
GOODBYE = 0xAD205DBF1A3686C3
ABORT = 0xE7D9136B7EFEA352

TYPE_NAMES = {
    HELLO: "HELLO", INDEX: "INDEX", INDEX_EOF: "INDEX_EOF", ARCHIVE: "ARCHIVE",
    ARCHIVE_EOF: "ARCHIVE_EOF", REQUEST: "REQUEST", CHUNK: "CHUNK", MISSING: "MISSING",
    GOODBYE: "GOODBYE", ABORT: "ABORT",
}

# -- HELLO feature flags: services offered, then operations wanted ------------------------
READABLE_STORE = 0x1
WRITABLE_STORE = 0x2
READABLE_INDEX = 0x4
WRITABLE_INDEX = 0x8
READABLE_ARCHIVE = 0x10
WRITABLE_ARCHIVE = 0x20
PULL_CHUNKS = 0x40
PULL_INDEX = 0x80
PULL_ARCHIVE = 0x100
PUSH_CHUNKS = 0x200
PUSH_INDEX = 0x400
PUSH_INDEX_CHUNKS = 0x800
PUSH_ARCHIVE = 0x1000
FEATURE_FLAGS_MAX = 0x1FFF
OPERATIONS = PULL_CHUNKS | PULL_INDEX | PULL_ARCHIVE | PUSH_CHUNKS | PUSH_INDEX | PUSH_ARCHIVE

#: An operation one side wants and the service the other side must offer for it.
_NEEDS = ((PULL_CHUNKS, READABLE_STORE), (PULL_INDEX, READABLE_INDEX),
          (PULL_ARCHIVE, READABLE_ARCHIVE), (PUSH_CHUNKS, WRITABLE_STORE),
          (PUSH_INDEX, WRITABLE_INDEX), (PUSH_ARCHIVE, WRITABLE_ARCHIVE))

REQUEST_HIGH_PRIORITY = 1
CHUNK_COMPRESSED = 1

HEADER = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_CHUNK_HEAD = struct.Struct("<QQQ32s")  # size, type, flags, id
SIZE_MIN = HEADER.size
#: casync refuses larger messages; so do we, both ways.
SIZE_MAX = 16 * 1024 * 1024
ID_SIZE = 32
HELLO_SIZE = 24
MISSING_SIZE = 16 + ID_SIZE
REQUEST_MIN = 24 + ID_SIZE
CHUNK_MIN = 16 + 8 + ID_SIZE + 1
#: The largest chunk payload one CHUNK message can carry.
CHUNK_DATA_MAX = SIZE_MAX - (CHUNK_MIN - 1)


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow."""


class PeerClosedError(ProtocolError):
    """The peer closed its end (``partial``: in the middle of a message)."""

    def __init__(self, message: str, *, partial: bool, received: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial
        #: the bytes of the unfinished message (to show what a non-casync peer said)
        self.received = received


class PeerTimeoutError(ProtocolError):
    """Nothing arrived from the peer within the time allowed."""


def type_name(msg_type: int) -> str:
    """A message type's name, or its hex value."""
    return TYPE_NAMES.get(msg_type, f"{msg_type:#x}")


def flag_names(flags: int) -> str:
    """HELLO flags in hex (casync's and desync's messages print them so)."""
    return f"{flags:#x}"


# -- building messages --------------------------------------------------------------------

def hello(flags: int) -> bytes:
    """A HELLO message offering/wanting ``flags``."""
    return HEADER.pack(HELLO_SIZE, HELLO) + _U64.pack(flags)


def request(chunk_ids: Sequence[bytes], flags: int = REQUEST_HIGH_PRIORITY) -> bytes:
    """One REQUEST for every id (at least one)."""
    body = b"".join(chunk_ids)
    return HEADER.pack(24 + len(body), REQUEST) + _U64.pack(flags) + body


def chunk_head(chunk_id: bytes, flags: int, data_size: int) -> bytes:
    """The first 56 bytes of a CHUNK message (the data follows)."""
    return _CHUNK_HEAD.pack(CHUNK_MIN - 1 + data_size, CHUNK, flags, chunk_id)


def missing(chunk_id: bytes) -> bytes:
    """A MISSING message."""
    return HEADER.pack(MISSING_SIZE, MISSING) + chunk_id


def goodbye() -> bytes:
    """A GOODBYE message."""
    return HEADER.pack(SIZE_MIN, GOODBYE)


def abort(error: int, reason: str) -> bytes:
    """An ABORT message; the reason is made printable and NUL-terminated."""
    text = "".join(c if " " <= c <= "~" else "?" for c in reason)[:4000].encode() + b"\0"
    return HEADER.pack(24 + len(text), ABORT) + _U64.pack(min(max(error, 0), 2**31 - 2)) + text


# -- checking messages (casync's validate_* rules) ----------------------------------------

def parse_hello(body: bytes | bytearray | memoryview) -> int:
    """The feature flags of a HELLO body, checked like casync checks them."""
    if len(body) != 8:
        raise ProtocolError(f"HELLO of {len(body) + 16} bytes (expected {HELLO_SIZE})")
    flags: int = _U64.unpack_from(body)[0]
    if flags == 0 or flags == 2**64 - 1:
        raise ProtocolError(f"HELLO with feature flags {flag_names(flags)}")
    if flags & ~FEATURE_FLAGS_MAX:
        raise ProtocolError(f"HELLO with unknown feature flags {flag_names(flags)}")
    if flags & PUSH_INDEX_CHUNKS and (flags & (PUSH_INDEX | PUSH_CHUNKS)) != \
            (PUSH_INDEX | PUSH_CHUNKS):
        raise ProtocolError(f"HELLO with feature flags {flag_names(flags)}: "
                            "PUSH_INDEX_CHUNKS needs PUSH_INDEX and PUSH_CHUNKS")
    return flags


def unmet_needs(wanting: int, offering: int) -> int:
    """The operations ``wanting`` asks for that ``offering`` does not serve."""
    return sum(op for op, service in _NEEDS if wanting & op and not offering & service)


def parse_request(body: bytes | bytearray | memoryview) -> tuple[int, list[bytes]]:
    """The flags and chunk ids of a REQUEST body."""
    if len(body) < REQUEST_MIN - 16 or (len(body) - 8) % ID_SIZE:
        raise ProtocolError(f"REQUEST of {len(body) + 16} bytes (not 24 + 32·k, k ≥ 1)")
    flags: int = _U64.unpack_from(body)[0]
    if flags & ~REQUEST_HIGH_PRIORITY:
        raise ProtocolError(f"REQUEST with unknown flags {flags:#x}")
    view = memoryview(body)
    ids = [bytes(view[i : i + ID_SIZE]) for i in range(8, len(body), ID_SIZE)]
    return flags, ids


def parse_chunk(body: bytes | bytearray | memoryview) -> tuple[int, bytes, memoryview]:
    """The flags, id and data (a view of ``body``) of a CHUNK body."""
    if len(body) < CHUNK_MIN - 16:
        raise ProtocolError(f"CHUNK of {len(body) + 16} bytes (at least {CHUNK_MIN})")
    view = memoryview(body)
    flags: int = _U64.unpack_from(body)[0]
    if flags & ~CHUNK_COMPRESSED:
        raise ProtocolError(f"CHUNK with unknown flags {flags:#x}")
    return flags, bytes(view[8 : 8 + ID_SIZE]), view[8 + ID_SIZE :]


def parse_missing(body: bytes | bytearray | memoryview) -> bytes:
    """The chunk id of a MISSING body."""
    if len(body) != ID_SIZE:
        raise ProtocolError(f"MISSING of {len(body) + 16} bytes (expected {MISSING_SIZE})")
    return bytes(body)


def parse_abort(body: bytes | bytearray | memoryview) -> tuple[int, str]:
    """The error number and reason of an ABORT body (lenient: it ends a session anyway)."""
    if len(body) < 9:
        return 0, "(no reason given)"
    error: int = _U64.unpack_from(body)[0]
    reason = bytes(body[8:]).split(b"\0", 1)[0].decode("utf-8", "replace")
    return error, "".join(c if c.isprintable() else "?" for c in reason) or "(no reason given)"


def check_empty(msg_type: int, body: bytes | bytearray | memoryview) -> None:
    """GOODBYE and the EOF messages have no body."""
    if body:
        raise ProtocolError(f"{type_name(msg_type)} of {len(body) + 16} bytes (expected 16)")


# -- reading and writing a file descriptor ------------------------------------------------

class MessageReader:
    """Reads framed messages from a file descriptor.

    A blocking descriptor is read with plain blocking reads (the server's stdin); a
    non-blocking one (the client's pipe from ssh) is waited for with ``poll`` and a
    deadline, so a peer that stops talking raises :class:`PeerTimeoutError` instead of
    hanging. Small messages are cut out of one read-ahead buffer; a large body is read
    straight into its own buffer (no second copy of chunk data).
    """

    def __init__(self, fd: int, buffer_size: int = 1 << 18) -> None:
        self.fd = fd
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._poll: select.poll | None = None
        if not os.get_blocking(fd):
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)

    def read(self, timeout: float | None = None) -> tuple[int, bytearray]:
        """The next message's type and body. ``timeout`` bounds the wait for each part
        of it (non-blocking descriptors only).

        Raises:
            PeerClosedError: end of stream (between messages, or inside one).
            PeerTimeoutError: nothing arrived in time.
            ProtocolError: a size outside 16 … 16 MiB.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._fill(HEADER.size, deadline, inside=False):
            raise PeerClosedError("the peer closed the connection", partial=False)
        size, msg_type = HEADER.unpack_from(self._buf, self._start)
        if size < SIZE_MIN or size > SIZE_MAX:
            head = bytes(self._view[self._start : min(self._end, self._start + 64)])
            raise ProtocolError(f"message size {size} outside {SIZE_MIN}…{SIZE_MAX} "
                                f"(first bytes {head!r})")
        self._start += HEADER.size
        body = bytearray(size - HEADER.size)
        have = min(len(body), self._end - self._start)
        body[:have] = self._view[self._start : self._start + have]
        self._start += have
        if have < len(body):
            self._read_into(memoryview(body)[have:], deadline, msg_type, size, HEADER.size + have)
        return msg_type, body

    def _fill(self, need: int, deadline: float | None, *, inside: bool) -> bool:
        """At least ``need`` buffered bytes; False at a clean end of stream."""
        while self._end - self._start < need:
            if self._start and self._start == self._end:
                self._start = self._end = 0
            elif len(self._buf) - self._start < need:
                kept = self._end - self._start
                self._view[:kept] = self._view[self._start : self._end]
                self._start, self._end = 0, kept
            n = self._readv(self._view[self._end :], deadline)
            if n == 0:
                if self._end == self._start and not inside:
                    return False
                got = bytes(self._view[self._start : self._end])
                raise PeerClosedError(f"the peer closed the connection after {len(got)} bytes "
                                 "of a message", partial=True, received=got)
            self._end += n
        return True

    def _read_into(self, target: memoryview, deadline: float | None, msg_type: int,
                   size: int, done: int) -> None:
        pos = 0
        while pos < len(target):
            n = self._readv(target[pos:], deadline)
            if n == 0:
                raise PeerClosedError(f"the peer closed the connection inside a "
                                 f"{type_name(msg_type)} message ({done + pos} of {size} "
                                 "bytes)", partial=True)
            pos += n

    def _readv(self, target: memoryview, deadline: float | None) -> int:
        if self._poll is None:
            return os.readv(self.fd, [target])
        while True:
            try:
                return os.readv(self.fd, [target])
            except BlockingIOError:
                pass
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise PeerTimeoutError("no answer from the peer in time")
            self._poll.poll(None if remaining is None else max(1, int(remaining * 1000) + 1))


def write_all(fd: int, parts: Sequence[bytes | bytearray | memoryview],
              deadline: float | None = None) -> None:
    """Write every part (``writev``); on a non-blocking descriptor wait with ``poll``
    until ``deadline``.

    Raises:
        PeerClosedError: the reading end is closed (EPIPE).
        PeerTimeoutError: the peer did not read in time.
    """
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    poller: select.poll | None = None
    while views:
        try:
            n = os.writev(fd, views)
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise PeerTimeoutError("the peer does not read what we send") from None
            poller.poll(None if remaining is None else max(1, int(remaining * 1000) + 1))
            continue
        except BrokenPipeError:
            raise PeerClosedError("the peer closed the connection", partial=False) from None
        while n and views:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0
