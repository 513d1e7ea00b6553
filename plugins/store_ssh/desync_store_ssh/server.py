"""``desync pull - - - STORE``: serve a chunk store over the casync protocol on stdin/stdout.

What casync's client and desync's client run on the remote side of an ssh session
(``remote.md`` §4.1, §4.3). Both sides send HELLO at once; the client must want
``PULL_CHUNKS`` and nothing we do not offer (we offer ``READABLE_STORE`` only). Then
every REQUEST is answered id by id, in order: CHUNK (always compressed, the form every
client understands) or MISSING (absent, or present but not convertible to the wire
format — undecodable, too large for one message). GOODBYE or the client hanging up
between messages ends the session normally (casync's client does not always say
GOODBYE); ABORT, garbage, a malformed or oversized message ends it with an error
(ABORT is sent back when the client may still listen).

The store is opened like any ``-s`` value (local, remote, a failover group), without
verification: the client verifies every chunk it receives.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import TYPE_CHECKING, Any

from desync_core.plugin_api import (
    COMPRESSED,
    ChunkInvalidError,
    ChunkMissingError,
    DesyncError,
    StoreError,
)
from desync_store_ssh import protocol as p

if TYPE_CHECKING:
    from desync_core.plugin_api import Context


class PullSessionError(StoreError):
    """The client broke the protocol or aborted (exit status 4)."""


class _ClientGoneError(Exception):
    """The client closed its end while we wrote: the session is over (casync's server
    exits 0 then too; casync's client hangs up once it has what it needs)."""


class PullServer:
    """One protocol session over two file descriptors.

    Args:
        source: a chunk reader (``get_chunk``), unverified.
        infd / outfd: the client's messages / our answers.
    """

    def __init__(self, source: Any, infd: int = 0, outfd: int = 1) -> None:
        self.source = source
        self.reader = p.MessageReader(infd)
        self.outfd = outfd
        self.served = 0
        self.missing = 0

    def serve(self) -> None:
        """Run the session to its end (GOODBYE, or the client hanging up).

        Raises:
            PullSessionError: the client sent something invalid or aborted.
            StoreError: the store failed (other than a missing or invalid chunk).
        """
        try:
            self._session()
        except _ClientGoneError:
            return

    def _session(self) -> None:
        self._send([p.hello(p.READABLE_STORE)])
        try:
            msg_type, body = self.reader.read()
        except p.PeerClosedError:
            raise PullSessionError("pull: the client closed the connection before its "
                                   "HELLO") from None
        except p.ProtocolError as exc:
            raise self._fail(f"invalid first message from the client: {exc}") from None
        if msg_type != p.HELLO:
            raise self._fail(f"expected HELLO from the client, got {p.type_name(msg_type)}")
        try:
            flags = p.parse_hello(body)
        except p.ProtocolError as exc:
            raise self._fail(f"invalid HELLO from the client: {exc}") from None
        if not flags & p.PULL_CHUNKS:
            raise self._fail(f"client is not requesting chunks, provided flags "
                             f"{flags:x}")
        unmet = p.unmet_needs(flags, p.READABLE_STORE)
        if unmet:
            raise self._fail(f"the client wants operations this server does not offer "
                             f"(flags {unmet:#x}); only chunks can be pulled")
        while True:
            try:
                msg_type, body = self.reader.read()
            except p.PeerClosedError as exc:
                if not exc.partial:
                    return  # the client hung up between messages: the session is over
                raise PullSessionError(f"pull: {exc}") from None
            except p.ProtocolError as exc:
                raise self._fail(f"invalid message from the client: {exc}") from None
            if msg_type == p.REQUEST:
                try:
                    _, ids = p.parse_request(body)
                except p.ProtocolError as exc:
                    raise self._fail(f"invalid message from the client: {exc}") from None
                self._answer(ids)
            elif msg_type == p.GOODBYE:
                return
            elif msg_type == p.ABORT:
                _, reason = p.parse_abort(body)
                raise PullSessionError(f"pull: the client aborted the session: {reason}")
            else:
                raise self._fail(f"unexpected {p.type_name(msg_type)} message from the "
                                 "client")

    def _answer(self, ids: list[bytes]) -> None:
        """CHUNK or MISSING for every id, in order; written as one batch."""
        parts: list[bytes | bytearray | memoryview] = []
        pending = 0
        for chunk_id in ids:
            try:
                wire = self.source.get_chunk(chunk_id).encoded(COMPRESSED)
            except (ChunkMissingError, ChunkInvalidError):
                wire = None
            except DesyncError as exc:
                raise self._fail(str(exc), errno.EIO) from None
            if wire is None or not len(wire) or len(wire) > p.CHUNK_DATA_MAX:
                parts.append(p.missing(chunk_id))
                self.missing += 1
            else:
                parts += (p.chunk_head(chunk_id, p.CHUNK_COMPRESSED, len(wire)), wire)
                self.served += 1
                pending += len(wire)
            if pending >= 1 << 20 or len(parts) >= 512:
                self._send(parts)
                parts, pending = [], 0
        self._send(parts)

    def _send(self, parts: list[bytes | bytearray | memoryview]) -> None:
        try:
            p.write_all(self.outfd, parts)
        except (p.PeerClosedError, OSError):
            raise _ClientGoneError() from None

    def _fail(self, reason: str, error: int = errno.EBADMSG) -> PullSessionError:
        """Tell the client (ABORT, best effort) and return the error to raise."""
        try:
            p.write_all(self.outfd, [p.abort(error, reason)])
        except (p.ProtocolError, OSError):
            pass
        return PullSessionError(f"pull: {reason}")


def main(args: argparse.Namespace, ctx: Context) -> int:
    """``desync pull - - - STORE``."""
    import dataclasses

    # The client verifies every chunk; decoding here would only cost time.
    ctx = dataclasses.replace(ctx, overrides={**ctx.overrides, "skip_verify": True})
    source = ctx.open_reader(args.store)
    # Nothing but protocol messages may reach stdout: keep print() off it.
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        PullServer(source, 0, out).serve()
    finally:
        source.close()
        os.close(out)
    return 0
