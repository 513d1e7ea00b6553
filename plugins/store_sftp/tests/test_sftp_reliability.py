"""Connections that drop, servers that stop mid-extract, several clients at once, and
writes cut short: never a partial chunk, index or output under its final name.

These tests use a server of their own (``own_sshd``) when they stop or cut it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from desync_core.plugin_api import Chunk, Context, Index, StoreConnectionError
from desync_core.testing import open_chunk_store, sample_chunk
from desync_core.testing.fixtures import CliResult, run_desync
from desync_core.testing.servers import SSHServer
from desync_store_sftp.store import SFTPChunkStore

Cli = Callable[..., CliResult]
DEADLINE = 60.0

ALIAS = SSHServer.alias


def _blob(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def _desync(*args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "desync_core", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def _chunk_ranges(index: Path) -> list[tuple[int, int]]:
    return [(c.start, c.size) for c in Index.from_bytes(index.read_bytes(), str(index))]


def _some_chunk_written(path: Path, data: bytes, ranges: list[tuple[int, int]]) -> bool:
    """Whether ``path`` already holds one of the blob's chunks (the extract is under way)."""
    try:
        with open(path, "rb") as f:
            for start, size in ranges[::7]:
                f.seek(start)
                if f.read(size) == data[start:start + size]:
                    return True
    except OSError:
        return False
    return False


def test_dropped_connection_is_reestablished(own_sshd: SSHServer, tmp_path: Path) -> None:
    """Cut every session of a pool of four idle ones: the next request (no retries)
    discards the dead sessions and succeeds on a new one; through the core's retrying
    reader a cut is invisible too."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"sftp://{ALIAS}{tmp_path}"
    store = Context(concurrency=4).open_chunk_store(url)
    assert isinstance(store, SFTPChunkStore)
    chunk_id, data = sample_chunk(1)
    store.store_chunk(Chunk(chunk_id, data))
    with ThreadPoolExecutor(4) as pool:  # four sessions, all idle afterwards
        list(pool.map(lambda _: store.get_chunk(chunk_id), range(40)))
    assert own_sshd.kill_sessions() >= 1
    _wait_until(lambda: not any(s.alive() for s in store._conn.pool()._idle),
                "the client to notice the cut")
    assert bytes(store.get_chunk(chunk_id).data()) == data
    reader = Context().open_reader(url)
    assert bytes(reader.get_chunk(chunk_id).data()) == data
    own_sshd.kill_sessions()
    assert bytes(reader.get_chunk(chunk_id).data()) == data
    store.close()
    reader.close()


def test_cut_write_leaves_no_final_name(own_sshd: SSHServer, tmp_path: Path) -> None:
    """A write cut off while the temporary file is being filled raises
    StoreConnectionError (so the core retries), and nothing appears under the final
    name."""
    store = open_chunk_store(f"sftp://{ALIAS}{tmp_path}")
    assert isinstance(store, SFTPChunkStore)
    chunk_id = bytes.fromhex("abcd" + "ab" * 30)
    store.has_chunk(chunk_id)  # connect first: the cut must hit the write
    chunk = Chunk(chunk_id, encoded=os.urandom(64 << 20), codec=store.codec)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.store_chunk(chunk)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    prefix = tmp_path / "abcd"
    _wait_until(lambda: prefix.is_dir() and any(p.stat().st_size for p in prefix.iterdir()),
                "the temporary file to fill")
    own_sshd.kill_sessions()
    writer.join(DEADLINE)
    assert not writer.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], StoreConnectionError), errors
    assert f"storing chunk {chunk_id.hex()}" in str(errors[0])
    assert not (tmp_path / store.key(chunk_id)).exists()
    store.close()


@pytest.mark.parametrize("in_place", [False, True], ids=["temp-file", "in-place"])
def test_server_stopped_mid_extract(own_sshd: SSHServer, tmp_path: Path,
                                    in_place: bool) -> None:
    """sshd stopped (and its sessions cut) while extract runs: one clear error, exit 4,
    no output (without -k); after a restart, ``-k`` finishes the partial output,
    reusing the chunks already in place.

    The extract is frozen (SIGSTOP) as soon as it has written a chunk, the server is
    stopped, then the extract continues: it cannot finish first, however loaded the
    machine is (an attempt is repeated only if it finished before it could be frozen).
    """
    store = tmp_path / "store"
    data = _blob(tmp_path / "blob", 8 << 20)
    index = tmp_path / "blob.caibx"
    run_desync("make", "-s", store, index, tmp_path / "blob")
    ranges = _chunk_ranges(index)
    url = f"sftp://{ALIAS}{store}"
    out = tmp_path / "out"
    flags = ["-n", "2", "-e", "2", "-b", "50ms", *(["-k"] if in_place else [])]

    def progress() -> bool:
        if in_place:
            return _some_chunk_written(out, data, ranges)
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
        return any(_some_chunk_written(p, data, ranges) for p in temps)

    for _attempt in range(5):
        out.unlink(missing_ok=True)
        proc = _desync("extract", *flags, "-s", url, index, out)
        _wait_until(lambda p=proc: progress() or p.poll() is not None,
                    "the extract to start")
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)
        if proc.poll() is None:
            break
        proc.communicate()  # finished before it could be frozen: try again
    else:
        pytest.fail("the extract always finished before it could be stopped")
    own_sshd.stop_all()
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=DEADLINE)
    errors = err.decode().splitlines()
    assert proc.returncode == 4, err
    assert "Traceback" not in err.decode()
    assert len(errors) == 1, err
    assert errors[0].startswith(f"Error: store {url}: reading chunk "), err
    assert errors[0].endswith(f"port {own_sshd.port}: Connection refused"), err
    if not in_place:
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
        return
    assert out.exists()
    own_sshd.restart()
    result = run_desync("extract", "-k", "--print-stats", "-s", url, index, out)
    assert out.read_bytes() == data
    assert json.loads(result.stdout)["chunks-in-place"] > 0


def test_several_clients_at_once(ok: Cli, remote: tuple[Path, str], tmp_path: Path) -> None:
    """Two makes writing overlapping chunks and two extracts, all at the same time,
    each with its own session pool: every one succeeds with the right bytes."""
    base, url = remote
    shared = random.Random(5).randbytes(1 << 20)
    (tmp_path / "a").write_bytes(shared + random.Random(6).randbytes(1 << 19))
    (tmp_path / "b").write_bytes(random.Random(7).randbytes(1 << 19) + shared)
    ok("make", "-s", url, tmp_path / "first.caibx", tmp_path / "a")
    procs = [_desync("make", "-n", "2", "-s", url, tmp_path / f"{n}.caibx", tmp_path / n)
             for n in ("a", "b")]
    procs += [_desync("extract", "-n", "2", "-s", url, tmp_path / "first.caibx",
                      tmp_path / f"out{i}") for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
    for i in range(2):
        assert (tmp_path / f"out{i}").read_bytes() == (tmp_path / "a").read_bytes()
    ok("extract", "-s", url, tmp_path / "b.caibx", tmp_path / "out-b")
    assert (tmp_path / "out-b").read_bytes() == (tmp_path / "b").read_bytes()
    leftovers = [p for p in base.rglob("*") if p.is_file() and not p.name.endswith(".cacnk")]
    assert leftovers == []


def test_pool_holds_at_most_n_sessions(own_sshd: SSHServer, tmp_path: Path) -> None:
    """Eight threads share ``-n 3`` sessions: the server sees three connections, each
    with TCP_NODELAY on the client's socket, and every read is right."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"sftp://{ALIAS}{tmp_path}"
    writer = open_chunk_store(url)
    chunks = [sample_chunk(seed, 20_000) for seed in range(40)]
    for chunk_id, data in chunks:
        writer.store_chunk(Chunk(chunk_id, data))
    writer.close()
    store = Context(concurrency=3).open_chunk_store(url)
    assert isinstance(store, SFTPChunkStore)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda c: bytes(store.get_chunk(c[0]).data()), chunks * 3))
    assert got == [data for _, data in chunks] * 3
    _wait_until(lambda: len(own_sshd.session_pids()) <= 3, "closed sessions to go away")
    assert len(own_sshd.session_pids()) == 3
    sessions = store._conn.pool()._idle
    assert len(sessions) == 3
    for session in sessions:
        sock = session.sftp.get_channel().get_transport().sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    store.close()


def test_hung_server_times_out(own_sshd: SSHServer, tmp_path: Path) -> None:
    """A server that stops answering (its session processes frozen) is a connection
    error after the store's ``timeout``, not a hang; the frozen session is dropped."""
    from desync_core.plugin_api import load_config

    (tmp_path / "s").mkdir()
    url = f"sftp://{ALIAS}{tmp_path}/s"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {url: {"timeout": 1_000_000_000}}}))
    store = Context(config=load_config(str(config))).open_chunk_store(url)
    assert store.options.timeout == 1.0
    chunk_id, data = sample_chunk(3)
    store.store_chunk(Chunk(chunk_id, data))
    frozen = own_sshd.session_pids()
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreConnectionError):
            store.get_chunk(chunk_id)
        assert time.monotonic() - started < DEADLINE
    finally:
        own_sshd.kill_sessions()
    assert bytes(store.get_chunk(chunk_id).data()) == data  # on a new session
    store.close()
