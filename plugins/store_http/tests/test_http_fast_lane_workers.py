"""The fast lane with pre-forked workers, for clients shaped like desync (Go)'s (#18).

desync (Go) opens its ``-n`` keep-alive connections at once and sends plain
``GET … HTTP/1.1`` requests with ``Host`` and ``User-Agent: Go-http-client/1.1``. Before
the workers shared a connection board, the worker that woke first accepted the whole
burst and served it on one core. These tests run a real ``chunk-server --workers 3``
and look, through ``/proc``, at which worker holds each connection and whether a
thread was started for it (the fast lane needs none; the thread handler one each).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from store_http_support import ServerProcess, blob_chunk_ids, chunk_path, wait_for

from desync_core.plugin_api import SHA512_256, decompress
from desync_core.testing.procfs import children_of

StartServer = Callable[..., ServerProcess]

WORKERS = 3
CONNECTIONS = 9

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs /proc")


def workers_of(server: ServerProcess) -> set[int]:
    """The pids of the server's child processes (its workers)."""
    return set(children_of(server.proc.pid))


def go_request(host: str, path: str) -> bytes:
    """A GET exactly as Go's net/http client (desync's) writes it."""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n"
            "\r\n").encode()


def read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one Content-Length reply."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "connection closed before the reply's headers"
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    size = int(headers["content-length"])
    while len(body) < size:
        data = sock.recv(65536)
        assert data, "connection closed inside the body"
        body += data
    assert len(body) == size  # nothing after it: one request, one reply
    return int(lines[0].split()[1]), headers, body


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process has open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def server_side_inode(server_port: int, client_port: int) -> int:
    """The inode of the server's end of the loopback connection from ``client_port``."""
    with open("/proc/net/tcp") as table:
        for row in table.read().splitlines()[1:]:
            fields = row.split()
            local, remote = fields[1], fields[2]
            if (int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port):
                return int(fields[9])
    raise AssertionError(f"no server socket for client port {client_port}")


def threads_of(pid: int) -> int:
    """How many threads a process runs."""
    return len(os.listdir(f"/proc/{pid}/task"))


def holders(srv: ServerProcess, workers: set[int], clients: list[socket.socket]) -> Counter[int]:
    """How many of ``clients``' connections each worker holds."""
    port = urlsplit(srv.url).port
    assert port is not None
    inodes = {pid: socket_inodes(pid) for pid in workers}
    held: Counter[int] = Counter()
    for sock in clients:
        inode = server_side_inode(port, sock.getsockname()[1])
        owners = [pid for pid in workers if inode in inodes[pid]]
        assert len(owners) == 1, f"connection held by {owners}"
        held[owners[0]] += 1
    return held


def test_go_shaped_burst_is_spread_over_the_workers_and_kept_alive(
        start_server: StartServer, cmd_testdata: Path) -> None:
    """Nine connections opened at once (as desync (Go) does with ``-n 9``) end up with
    every worker, each answered twice on the same connection by the fast lane (no
    thread started for any of them)."""
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       "--workers", str(WORKERS))
    assert wait_for(lambda: len(workers_of(srv)) == WORKERS)
    workers = workers_of(srv)
    ids = blob_chunk_ids(cmd_testdata / "blob1.caibx")
    split = urlsplit(srv.url)
    assert split.hostname is not None
    assert split.port is not None
    host = f"{split.hostname}:{split.port}"
    threads = {pid: threads_of(pid) for pid in workers}
    clients = [socket.create_connection((split.hostname, split.port))
               for _ in range(CONNECTIONS)]
    try:
        for round_ in range(2):  # the second round reuses every connection
            for i, sock in enumerate(clients):
                sock.sendall(go_request(host, chunk_path(ids[(i + round_) % len(ids)])))
            for i, sock in enumerate(clients):
                chunk_id = ids[(i + round_) % len(ids)]
                status, headers, body = read_reply(sock)
                assert status == 200
                assert headers.get("connection", "") != "close"
                assert SHA512_256.sum(decompress(body, chunk_id)) == chunk_id
        held = holders(srv, workers, clients)
        assert sum(held.values()) == CONNECTIONS
        # One worker took the whole burst before; now each has its share (exactly 3
        # unless a worker was not scheduled within MAX_DEFER on a loaded machine).
        assert set(held) == workers
        assert min(held.values()) >= 2
        assert {pid: threads_of(pid) for pid in workers} == threads
    finally:
        for sock in clients:
            sock.close()
    assert srv.stop() == 0
