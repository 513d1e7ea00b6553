"""Pre-forked workers of chunk-server and index-server (#18): real server subprocesses
with ``--workers``, many clients at once, SIGHUP reaching every worker, a killed worker
replaced, SIGTERM leaving no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from store_http_support import (
    PATIENCE,
    ServerProcess,
    blob_chunk_ids,
    chunk_path,
    raw_request,
    wait_for,
)

from desync_core.plugin_api import SHA512_256, decompress
from desync_core.testing.procfs import children_of

StartServer = Callable[..., ServerProcess]


def workers_of(server: ServerProcess) -> set[int]:
    """The pids of the server's child processes (its workers)."""
    return set(children_of(server.proc.pid))


def alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def blob1_ids(cmd_testdata: Path) -> list[bytes]:
    """The unique chunk ids of blob1."""
    return blob_chunk_ids(cmd_testdata / "blob1.caibx")


def test_workers_serve_many_clients(start_server: StartServer, cmd_testdata: Path,
                                    blob1_ids: list[bytes]) -> None:
    """Three workers; 16 clients, each on fresh connections, get every chunk right."""
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       "--workers", "3")
    assert wait_for(lambda: len(workers_of(srv)) == 3)
    errors: list[str] = []
    served: list[int] = []

    def client(offset: int) -> None:
        for chunk_id in blob1_ids[offset::16]:
            status, body = raw_request(srv.url, "GET", chunk_path(chunk_id))
            if status != 200 or SHA512_256.sum(decompress(body, chunk_id)) != chunk_id:
                errors.append(f"{chunk_id.hex()}: {status}")
            served.append(1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(served) == len(blob1_ids)
    assert raw_request(srv.url, "GET", chunk_path(bytes(32)))[0] == 404
    assert srv.stop() == 0


def test_sighup_reaches_every_worker(start_server: StartServer, cmd_testdata: Path,
                                     blob1_ids: list[bytes], tmp_path: Path) -> None:
    both = tmp_path / "both"
    shutil.copytree(cmd_testdata / "blob1.store", both)
    shutil.copytree(cmd_testdata / "blob2.store", both, dirs_exist_ok=True)
    only_blob2 = sorted(set(blob_chunk_ids(cmd_testdata / "blob2.caibx")) - set(blob1_ids))[0]
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(cmd_testdata / "blob1.store")]}))
    srv = start_server("chunk-server", "--store-file", str(store_file), "--workers", "3")
    assert wait_for(lambda: len(workers_of(srv)) == 3)
    assert raw_request(srv.url, "GET", chunk_path(only_blob2))[0] == 404

    # An invalid file: every worker reports its failed reload, so each got the signal.
    store_file.write_text('{"stores": [')
    srv.send_signal(signal.SIGHUP)
    assert wait_for(lambda: srv.stderr().count("failed to reload configuration:") == 3), \
        srv.stderr()

    # A valid one: then every new connection, whichever worker takes it, sees the chunk.
    tmp = store_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stores": [str(both)]}))
    tmp.replace(store_file)
    srv.send_signal(signal.SIGHUP)

    def all_reloaded() -> bool:
        return all(raw_request(srv.url, "GET", chunk_path(only_blob2))[0] == 200
                   for _ in range(30))

    assert wait_for(all_reloaded)
    assert srv.stderr().count("failed to reload configuration:") == 3
    assert srv.stop() == 0


def test_killed_worker_is_replaced(start_server: StartServer, cmd_testdata: Path,
                                   blob1_ids: list[bytes]) -> None:
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       "--workers", "2")
    assert wait_for(lambda: len(workers_of(srv)) == 2)
    before = workers_of(srv)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    assert srv.wait_for_stderr(f"worker process {victim} was killed by signal 9; "
                               "starting a new one"), srv.stderr()
    assert wait_for(lambda: len(workers_of(srv)) == 2 and victim not in workers_of(srv))
    assert (before - {victim}) <= workers_of(srv)
    for chunk_id in blob1_ids[:20]:  # fresh connections reach both workers
        assert raw_request(srv.url, "GET", chunk_path(chunk_id))[0] == 200
    assert srv.proc.poll() is None
    assert srv.stop() == 0


@pytest.mark.parametrize("command", ["chunk-server", "index-server"])
def test_sigterm_stops_every_worker(start_server: StartServer, cmd_testdata: Path,
                                    command: str) -> None:
    store = cmd_testdata / ("blob1.store" if command == "chunk-server" else "")
    srv = start_server(command, "-s", str(store), "--workers", "3")
    assert wait_for(lambda: len(workers_of(srv)) == 3)
    pids = workers_of(srv)
    srv.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=PATIENCE) == 0
    assert not [pid for pid in pids if alive(pid)]


def test_worker_exits_when_the_supervisor_is_killed(start_server: StartServer,
                                                    cmd_testdata: Path) -> None:
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       "--workers", "2")
    assert wait_for(lambda: len(workers_of(srv)) == 2)
    pids = workers_of(srv)
    srv.proc.kill()
    srv.proc.wait()
    assert wait_for(lambda: not [pid for pid in pids if alive(pid)])


def test_one_worker_is_a_single_process(start_server: StartServer, cmd_testdata: Path,
                                        blob1_ids: list[bytes]) -> None:
    srv = start_server("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                       "--workers", "1")
    assert raw_request(srv.url, "GET", chunk_path(blob1_ids[0]))[0] == 200
    assert workers_of(srv) == set()
    assert srv.stop() == 0


def test_index_server_workers(start_server: StartServer, cmd_testdata: Path,
                              tmp_path: Path) -> None:
    shutil.copy(cmd_testdata / "blob1.caibx", tmp_path / "a.caibx")
    srv = start_server("index-server", "-s", str(tmp_path), "-w", "--workers", "2")
    assert wait_for(lambda: len(workers_of(srv)) == 2)
    index = (cmd_testdata / "blob1.caibx").read_bytes()
    for i in range(6):
        assert raw_request(srv.url, "PUT", f"/n{i}.caibx", body=index)[0] == 200
    for i in range(6):
        assert raw_request(srv.url, "GET", f"/n{i}.caibx") == (200, index)
    assert srv.stop() == 0
