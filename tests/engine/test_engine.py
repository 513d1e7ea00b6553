"""The execution engine: forked workers and threads, the error transport (class, exit
code and message across processes), workers that die, interrupts in the parent, and
no worker left behind."""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path

import pytest

from desync_core.engine import (
    ForkExecutor,
    ForkPool,
    Messages,
    ThreadPool,
    Threads,
    WorkerDiedError,
    fork,
    pack_error,
    unpack_error,
)
from desync_core.engine.forks import ERROR
from desync_core.errors import (
    ArchiveFormatError,
    ChunkInvalidError,
    ChunkMissingError,
    DesyncError,
    StoreError,
)


def children() -> set[int]:
    """Processes whose parent is this one (zombies included: not reaped yet)."""
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me:
            found.add(int(entry.name))
    return found


@pytest.fixture
def no_leftovers() -> object:
    """Fails the test if it leaves a child process of the test process behind."""
    before = children()
    yield None
    assert children() - before == set()


# -- the error transport ----------------------------------------------------------------


ERRORS = [
    ChunkMissingError(b"\1" * 32, "some store"),
    ChunkInvalidError(b"\2" * 32, b"\3" * 32, store="s"),
    ChunkInvalidError(b"\2" * 32, cause="truncated"),
    ArchiveFormatError("bad archive"),
    StoreError("store full"),
    OSError(errno.ENOSPC, "No space left on device", "f"),
    DesyncError("plain"),
]


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_cross_processes_as_they_are(exc: BaseException) -> None:
    back = unpack_error(pack_error(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert getattr(back, "exit_code", None) == getattr(exc, "exit_code", None)
    if isinstance(exc, OSError):
        assert back.errno == exc.errno  # type: ignore[attr-defined]


def test_bugs_cross_processes_with_their_traceback() -> None:
    try:
        raise ValueError("a bug")
    except ValueError as exc:
        back = unpack_error(pack_error(exc))
    assert isinstance(back, RuntimeError)
    assert "ValueError: a bug" in str(back)
    assert "test_bugs_cross_processes" in str(back)


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_in_a_forked_worker_is_raised_in_the_parent(exc: BaseException,
                                                             no_leftovers: None) -> None:
    def task(i: int) -> bytes:
        if i == 7:
            raise exc
        return b""

    with pytest.raises(type(exc)) as caught:
        ForkPool(2).run(50, task, lambda i, r: None)
    assert str(caught.value) == str(exc)
    assert getattr(caught.value, "exit_code", None) == getattr(exc, "exit_code", None)


def test_a_forked_child_reports_its_error(no_leftovers: None) -> None:
    r, w = os.pipe()
    pid = fork(lambda: (_ for _ in ()).throw(StoreError("no space in the store")),
               report_fd=w, close=[r])
    os.close(w)
    messages = Messages(r)
    got = []
    while not messages.eof:
        got += messages.read()
    messages.close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert len(got) == 1
    assert got[0][0] == ERROR
    assert type(got[0][1]) is StoreError
    assert str(got[0][1]) == "no space in the store"


# -- workers that die -------------------------------------------------------------------


def test_a_worker_killed_by_a_signal_is_a_clear_error(no_leftovers: None) -> None:
    """The other worker goes on; the error names the signal and the task left."""
    done: list[int] = []

    def task(i: int) -> bytes:
        if i == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return b""

    with pytest.raises(WorkerDiedError, match=r"^a worker process was killed by SIGKILL$"
                       ) as caught:
        ForkPool(2).run(20, task, lambda i, r: done.append(i))
    assert caught.value.exit_code == 1
    assert caught.value.unfinished == (3,)
    assert sorted(done) == [i for i in range(20) if i != 3]


def test_a_worker_that_exits_is_a_clear_error(no_leftovers: None) -> None:
    def task(i: int) -> bytes:
        os._exit(3)

    with pytest.raises(WorkerDiedError, match=r"^a hashing process ended unexpectedly "
                       r"\(exit status 3\)$") as caught:
        ForkPool(1, what="a hashing process").run(5, task, lambda i, r: None)
    assert caught.value.unfinished == (0, 1, 2, 3, 4)


# -- normal runs ------------------------------------------------------------------------


def test_fork_pool_runs_every_task_once(no_leftovers: None) -> None:
    """More task numbers than the pipe holds: they are fed as workers take them."""
    seen: dict[int, tuple[int, int]] = {}

    def task(i: int) -> bytes:
        return f"{3 * i} {os.getpid()}".encode()

    def finished(i: int, result: bytes) -> None:
        assert i not in seen
        value, pid = map(int, result.split())
        seen[i] = (value, pid)

    ForkPool(2, pipe_size=4096).run(5000, task, finished)
    assert sorted(seen) == list(range(5000))
    assert all(value == 3 * i for i, (value, _pid) in seen.items())
    workers = {pid for _value, pid in seen.values()}
    assert 1 <= len(workers) <= 2  # (one may take all if the other starts late)
    assert os.getpid() not in workers


def test_large_results_come_back_whole(no_leftovers: None) -> None:
    results: dict[int, bytes] = {}
    ForkPool(2).run(8, lambda i: bytes([i]) * (300_000 + i),
                    lambda i, r: results.__setitem__(i, r))
    assert results == {i: bytes([i]) * (300_000 + i) for i in range(8)}


def test_workers_run_init_once_and_inherit_the_work(no_leftovers: None) -> None:
    lock = threading.Lock()  # not picklable: the work is inherited, not sent
    state: dict[str, int] = {}

    def init() -> None:
        state["pid"] = os.getpid()

    def task(i: int) -> bytes:
        assert lock is not None
        assert state["pid"] == os.getpid()
        return b""

    ForkPool(2, init=init).run(10, task, lambda i, r: None)


def test_fork_executor_results_in_order(no_leftovers: None) -> None:
    lock = threading.Lock()
    with ForkExecutor(2) as pool:
        futures = [pool.submit(lambda i, lk: (i * i, lk is not None), i, lock)
                   for i in range(40)]
        assert [f.result() for f in futures] == [(i * i, True) for i in range(40)]


def test_fork_executor_raises_the_workers_error(no_leftovers: None) -> None:
    def hash_one(i: int) -> int:
        if i == 5:
            raise ChunkInvalidError(b"\2" * 32, b"\3" * 32)
        return i

    with ForkExecutor(2) as pool:
        futures = [pool.submit(hash_one, i) for i in range(20)]
        with pytest.raises(ChunkInvalidError):
            [f.result() for f in futures]


# -- interrupts -------------------------------------------------------------------------


def test_an_interrupt_in_the_parent_stops_every_worker(no_leftovers: None) -> None:
    r, w = os.pipe()  # the workers block on it until they are killed

    def task(i: int) -> bytes:
        if i:
            os.read(r, 1)
        return b""

    def finished(i: int, result: bytes) -> None:
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            ForkPool(2).run(10, task, finished)
    finally:
        os.close(r)
        os.close(w)


def test_workers_ignore_interrupts(no_leftovers: None) -> None:
    """SIGINT/SIGTERM sent to a worker (e.g. to the whole process group by a terminal)
    are left to the parent."""
    def task(i: int) -> bytes:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        return str(os.getpid()).encode()

    done: list[int] = []
    ForkPool(2).run(4, task, lambda i, r: done.append(i))
    assert sorted(done) == [0, 1, 2, 3]


def test_threads_drop_queued_tasks_on_an_error() -> None:
    ran: list[int] = []
    gate = threading.Event()

    def work(i: int) -> None:
        gate.wait()
        ran.append(i)

    def submit_and_interrupt() -> None:
        with Threads(1) as pool:
            for i in range(50):
                pool.submit(work, i)
            gate.set()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        submit_and_interrupt()
    assert len(ran) < 50


def test_thread_pool_raises_the_first_error_and_skips_the_rest() -> None:
    cancelled = threading.Event()
    ran: list[int] = []

    def fn(i: int, _state: object) -> None:
        ran.append(i)
        if i == 2:
            raise StoreError("broken")

    pool = ThreadPool(2, cancelled)
    with pytest.raises(StoreError, match="broken"):
        pool.run(range(1000), fn, lambda: None)
    assert cancelled.is_set()
    assert len(ran) < 1000
    assert not pool.abandoned


DIES_WITH_PARENT = """
import os, sys, time
from desync_core.engine import ForkPool

def task(i):
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(3600)

ForkPool(1).run(1, task, lambda i, r: None)
"""


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    """A parent killed outright (SIGKILL: no clean-up runs) leaves no worker behind."""
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c", DIES_WITH_PARENT, str(pid_file)])
    try:
        for _ in range(1200):  # a safety net, not a timing assertion
            if pid_file.exists() or parent.poll() is not None:
                break
            time.sleep(0.05)
        worker = int(pid_file.read_text())
    finally:
        parent.kill()
        parent.wait()
    for _ in range(1200):
        stat = Path(f"/proc/{worker}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the worker outlived its parent")
