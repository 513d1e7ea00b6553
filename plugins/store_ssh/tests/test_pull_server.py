"""``desync pull - - - STORE`` driven directly over pipes, message by message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desync_core.plugin_api import SHA512_256, chunk_key, compress, decompress
from desync_store_ssh import protocol as p

WAIT = 30.0  # seconds: generous, the machine is shared


class Pull:
    """A ``desync pull`` child with protocol helpers."""

    def __init__(self, store: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "desync_core", "pull", *extra, "-", "-", "-", str(store)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.reader = p.MessageReader(self.proc.stdout.fileno())

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    def read(self) -> tuple[int, bytearray]:
        return self.reader.read(WAIT)

    def start(self, flags: int = p.PULL_CHUNKS) -> None:
        """Exchange HELLOs; the server offers a readable store."""
        self.send(p.hello(flags))
        msg_type, body = self.read()
        assert msg_type == p.HELLO
        assert p.parse_hello(body) == p.READABLE_STORE

    def finish(self) -> tuple[int, str]:
        """Close stdin and wait: exit status and stderr."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait(WAIT)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()
        return code, err.decode()


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, list[tuple[bytes, bytes]]]:
    """A local store with three chunks."""
    root = tmp_path / "store"
    chunks = []
    for k in range(3):
        data = os.urandom(1000 + k) + b"x" * 5000
        cid = SHA512_256.sum(data)
        path = root / chunk_key(cid, ".cacnk")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(compress(data))
        chunks.append((cid, data))
    return root, chunks


def one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: pull: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def test_every_id_of_a_request_answered_in_order(store) -> None:  # type: ignore[no-untyped-def]
    root, chunks = store
    absent = SHA512_256.sum(b"absent")
    server = Pull(root)
    server.start()
    ids = [chunks[0][0], absent, chunks[2][0], chunks[1][0]]
    server.send(p.request(ids))
    for cid in ids:
        msg_type, body = server.read()
        if cid == absent:
            assert msg_type == p.MISSING
            assert p.parse_missing(body) == absent
            continue
        assert msg_type == p.CHUNK
        flags, got, data = p.parse_chunk(body)
        assert (flags, got) == (p.CHUNK_COMPRESSED, cid)
        assert decompress(data, cid) == dict(chunks)[cid]
    server.send(p.goodbye())
    code, err = server.finish()
    assert (code, err) == (0, "")


def test_pipelined_requests(store) -> None:  # type: ignore[no-untyped-def]
    """Many REQUESTs sent before reading: one answer each, in order."""
    root, chunks = store
    server = Pull(root)
    server.start()
    ids = [cid for cid, _ in chunks] * 20
    server.send(b"".join(p.request([cid], flags=0) for cid in ids))
    for cid in ids:
        msg_type, body = server.read()
        assert msg_type == p.CHUNK
        assert p.parse_chunk(body)[1] == cid
    server.send(p.goodbye())
    assert server.finish() == (0, "")


def test_client_hanging_up_after_hello_is_a_normal_end(store) -> None:  # type: ignore[no-untyped-def]
    """casync's client hangs up without GOODBYE once it has its chunks."""
    server = Pull(store[0])
    server.start()
    assert server.finish() == (0, "")


def test_uncompressed_store_served_compressed(tmp_path: Path) -> None:
    """Chunks of an uncompressed store are compressed for the wire (every client
    understands that); one too large for a 16 MiB message is MISSING."""
    root = tmp_path / "store"
    small = b"plain chunk " * 1000
    big = os.urandom(17 * 1024 * 1024)
    ids = []
    for data in (small, big):
        cid = SHA512_256.sum(data)
        path = root / chunk_key(cid, "")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        ids.append(cid)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {str(root): {"uncompressed": True}}}))
    server = Pull(root, "--config", str(config))
    server.start()
    server.send(p.request(ids))
    msg_type, body = server.read()
    assert msg_type == p.CHUNK
    flags, cid, data = p.parse_chunk(body)
    assert (flags, cid) == (p.CHUNK_COMPRESSED, ids[0])
    assert decompress(data, cid) == small
    msg_type, body = server.read()
    assert (msg_type, bytes(body)) == (p.MISSING, ids[1])
    server.send(p.goodbye())
    assert server.finish() == (0, "")


def test_corrupt_chunk_is_sent_as_is(store) -> None:  # type: ignore[no-untyped-def]
    """The server does not verify (the client does): stored bytes go out unchanged."""
    root, chunks = store
    cid = chunks[0][0]
    (root / chunk_key(cid, ".cacnk")).write_bytes(b"\x28\xb5\x2f\xfdnot zstd")
    server = Pull(root)
    server.start()
    server.send(p.request([cid]))
    msg_type, body = server.read()
    assert msg_type == p.CHUNK
    assert bytes(p.parse_chunk(body)[2]) == b"\x28\xb5\x2f\xfdnot zstd"
    server.send(p.goodbye())
    assert server.finish() == (0, "")


@pytest.mark.parametrize(("flags", "fragment"), [
    (p.READABLE_INDEX, "client is not requesting chunks, provided flags 4"),
    (p.PULL_CHUNKS | p.PULL_INDEX, "does not offer (flags 0x80)"),
    (1 << 20, "unknown feature flags 0x100000"),
    (0, "feature flags 0x0"),
])
def test_bad_client_hello(store, flags: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    """Refused with ABORT and one line on stderr."""
    server = Pull(store[0])
    server.send(p.hello(flags))
    msg_type, _ = server.read()
    assert msg_type == p.HELLO
    msg_type, body = server.read()
    assert msg_type == p.ABORT
    assert fragment in p.parse_abort(body)[1]
    code, err = server.finish()
    assert code == 4
    one_error_line(err, fragment)


@pytest.mark.parametrize(("garbage", "fragment"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "message size"),
    (p.HEADER.pack(p.SIZE_MAX + 1, p.REQUEST), "message size 16777217 outside"),
    (p.HEADER.pack(40, p.REQUEST) + bytes(24), "REQUEST of 40 bytes"),
    (p.HEADER.pack(56, p.REQUEST) + (2).to_bytes(8, "little") + bytes(32),
     "REQUEST with unknown flags 0x2"),
    (p.HEADER.pack(24, p.INDEX) + bytes(8), "unexpected INDEX message"),
    (p.HEADER.pack(56, p.REQUEST) + bytes(10), "inside a REQUEST message (26 of 56 bytes)"),
])
def test_garbage_after_hello(store, garbage: bytes, fragment: str) -> None:  # type: ignore[no-untyped-def]
    server = Pull(store[0])
    server.start()
    server.send(garbage)
    code, err = server.finish()
    assert code == 4
    one_error_line(err, fragment)


def test_client_abort(store) -> None:  # type: ignore[no-untyped-def]
    server = Pull(store[0])
    server.start()
    server.send(p.abort(5, "user pressed ^C"))
    code, err = server.finish()
    assert code == 4
    one_error_line(err, "the client aborted the session: user pressed ^C")


def test_needs_exactly_four_operands(store) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run([sys.executable, "-m", "desync_core", "pull", "-", "-", str(store[0])],
                          capture_output=True, timeout=WAIT)
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert proc.stderr.decode().count("\n") == 1
