"""Misbehaving casync servers, run as the remote command of a real ssh session.

``python peers.py MODE pull - - - STORE``: after the optional HELLO, each mode reads the
client's HELLO and first REQUEST, then breaks the protocol its own way. Every mode ends
by itself (at the latest when the client closes its end, or after 20 s), so nothing
outlives a test.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
import time
from pathlib import Path

from desync_store_ssh import protocol as p


def send(data: bytes) -> None:
    """Write everything to stdout."""
    p.write_all(1, [data])


def wait_for_eof(limit: float = 20.0) -> None:
    """Block until the client closes stdin (or ``limit`` seconds pass)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([0], [], [], max(0.0, deadline - time.monotonic()))
        if ready and not os.read(0, 65536):
            return


def main() -> None:
    mode, store = sys.argv[1], Path(sys.argv[-1])
    if mode == "silent":  # never says anything
        wait_for_eof()
        return
    if mode == "text":  # a program that prints a greeting
        send(b"Welcome to the machine!\n" * 3)
        return
    if mode == "no-chunks":  # a casync peer offering indexes only
        send(p.hello(p.READABLE_INDEX))
        wait_for_eof()
        return
    send(p.hello(p.READABLE_STORE))
    reader = p.MessageReader(0)
    reader.read()  # HELLO
    if mode == "hang-after-hello":
        wait_for_eof()
        return
    _, body = reader.read()
    _, ids = p.parse_request(body)
    chunk_id = ids[0]
    if mode == "hangup":  # the session dies with a request pending (killed: ssh exits 255)
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "quits":  # the server exits by itself with a request pending
        sys.exit(3)
    if mode == "truncated":
        send(p.chunk_head(chunk_id, p.CHUNK_COMPRESSED, 1000) + b"x" * 100)
        return
    if mode == "oversized":
        send(struct.pack("<QQ", 32 * 1024 * 1024, p.CHUNK) + b"\0" * 64)
        wait_for_eof()
        return
    if mode == "abort":
        send(p.abort(5, "the disk is on fire"))
        wait_for_eof()
        return
    if mode == "wrong-id":
        other = bytes(32)
        send(p.chunk_head(other, p.CHUNK_COMPRESSED, 4) + b"abcd")
        wait_for_eof()
        return
    if mode == "bad-flags":
        send(p.chunk_head(chunk_id, 6, 4) + b"abcd")
        wait_for_eof()
        return
    if mode.startswith("record="):  # MISSING for everything; how the session ended
        record = Path(mode.split("=", 1)[1])
        while True:
            send(b"".join(p.missing(cid) for cid in ids))
            try:
                msg_type, body = reader.read()
            except p.PeerClosedError:
                record.write_text("hung up")
                return
            if msg_type != p.REQUEST:
                record.write_text(p.type_name(msg_type))
                return
            _, ids = p.parse_request(body)
    if mode == "uncompressed":  # a valid server sending plain chunk data (flag clear)
        from desync_core.plugin_api import decompress

        while True:
            for cid in ids:
                path = store / cid.hex()[:4] / (cid.hex() + ".cacnk")
                if path.exists():
                    data = decompress(path.read_bytes(), cid)
                    send(p.chunk_head(cid, 0, len(data)) + data)
                else:
                    send(p.missing(cid))
            msg_type, body = reader.read()
            if msg_type != p.REQUEST:
                return
            _, ids = p.parse_request(body)
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    try:
        main()
    except p.PeerClosedError:
        pass
