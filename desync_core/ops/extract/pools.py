"""Worker threads and forked worker processes for ``extract``'s assembly, and how many
of each a store chain and its seeds allow."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import queue
import select
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from desync_core.ops.extract.target import COUNTER_FIELDS, ExtractStats
from desync_core.seeds.base import Seed

#: How long an interrupted run waits for busy workers before leaving them behind.
CANCEL_GRACE_SECONDS = 2.0

T = TypeVar("T")


_STOP = object()


class WorkerPool:
    """Applies ``fn(item, state)`` to items on ``workers`` daemon threads.

    At most ``2 * workers`` items wait in the queue. The first error (or an exception
    in the calling thread, such as KeyboardInterrupt) sets ``cancelled``; workers then
    skip what is left and the error is raised by :meth:`run`. Workers are daemon
    threads, so one stuck in a blocking call (a hung network store) cannot keep the
    process alive after an interruption: if they do not finish within
    :data:`CANCEL_GRACE_SECONDS` they are left behind and :attr:`abandoned` is set
    (the caller must then not close what they use).
    """

    def __init__(self, workers: int, cancelled: threading.Event) -> None:
        self.workers = max(1, workers)
        self.cancelled = cancelled
        self.abandoned = False

    def run(self, items: Iterable[T], fn: Callable[[T, Any], None],
            make_state: Callable[[], Any]) -> None:
        """Process every item (in parallel); raises the first error."""
        work: queue.Queue[Any] = queue.Queue(maxsize=2 * self.workers)
        errors: list[BaseException] = []
        cancelled = self.cancelled

        def worker() -> None:
            state = make_state()
            while True:
                item = work.get()
                if item is _STOP:
                    return
                if cancelled.is_set():
                    continue
                try:
                    fn(item, state)
                except BaseException as exc:  # handed to the calling thread
                    errors.append(exc)
                    cancelled.set()

        threads = [threading.Thread(target=worker, name=f"desync-extract-{k}", daemon=True)
                   for k in range(self.workers)]
        for t in threads:
            t.start()
        interrupted = False
        try:
            for item in items:
                if cancelled.is_set():
                    break
                work.put(item)
        except BaseException:
            interrupted = True
            cancelled.set()
            raise
        finally:
            stopping = interrupted or bool(errors)
            _stop_workers(work, threads, drop_queued=stopping)
            # Until proven otherwise (a second interrupt may strike while waiting).
            self.abandoned = True
            try:
                self.abandoned = _join(threads, CANCEL_GRACE_SECONDS if stopping else None)
            except BaseException:
                # Interrupted while the workers finished the queue: they skip the rest.
                cancelled.set()
                self.abandoned = _join(threads, CANCEL_GRACE_SECONDS)
                raise
        if errors:
            raise errors[0]


def _stop_workers(work: queue.Queue[Any], threads: Sequence[threading.Thread], *,
                  drop_queued: bool) -> None:
    """Tell every worker to finish (after the queued items, unless ``drop_queued``)."""
    while drop_queued:
        try:
            work.get_nowait()
        except queue.Empty:
            break
    for _ in threads:
        work.put(_STOP)


def _join(threads: Sequence[threading.Thread], timeout: float | None) -> bool:
    """Wait for the workers; True if some are still running after ``timeout`` seconds."""
    if timeout is None:
        for t in threads:
            t.join()
        return False
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.daemon = True
    timer.start()
    try:
        for t in threads:
            while t.is_alive() and not deadline.is_set():
                t.join(0.05)
    finally:
        timer.cancel()
    return any(t.is_alive() for t in threads)


class ForkedWorkers:
    """Runs numbered tasks on forked worker processes (Linux), for CPU-bound assembly.

    Threads share one interpreter lock: measured on the 2-core benchmark machine, the
    hand-offs between two extract threads cost ~0.35 s of user and ~0.17 s of system
    time per 400 MB. Forked workers share nothing at run time. They inherit the plan,
    the open target, seeds and stores (all positional I/O on shared descriptors) and
    take task numbers from one pipe: the parent writes 4-byte numbers in atomic pieces,
    and every read of 4 bytes by a worker takes exactly one, so the tasks balance over
    the workers without locks. Each finished task is reported with its counters as one
    atomic record on a second pipe; the parent applies them (progress, self-seed
    marks). Workers ignore SIGINT and SIGTERM (the parent decides), die with the parent
    (``PR_SET_PDEATHSIG``), and stop at their first failure; the parent then stops the
    others and returns the tasks nobody finished, for the caller to run again where the
    error can be raised as usual.
    """

    _RECORD = struct.Struct("<ii" + "q" * len(COUNTER_FIELDS))

    def __init__(self, processes: int, *, pipe_size: int = 1 << 20) -> None:
        self.processes = processes
        #: Capacity asked for the task pipe; numbers that do not fit are written as
        #: workers take the others.
        self.pipe_size = pipe_size

    def run(self, count: int, run: Callable[[int, ExtractStats], None],
            finished: Callable[[int, ExtractStats], None]) -> list[int]:
        """Run tasks ``0..count-1`` as ``run(i, counters)`` in the workers; calls
        ``finished(i, counters)`` here as each completes. Returns the unfinished tasks
        (none unless a worker failed or died)."""
        done = bytearray(count)
        numbers = np.arange(count, dtype="<u4").tobytes()
        task_r, task_w = os.pipe2(os.O_CLOEXEC)
        res_r, res_w = os.pipe2(os.O_CLOEXEC)
        pids: list[int] = []
        try:
            with contextlib.suppress(OSError):  # room for every number at once, ideally
                fcntl.fcntl(task_w, fcntl.F_SETPIPE_SZ, min(len(numbers), self.pipe_size))
            os.set_blocking(task_w, False)
            sent = _write_some(task_w, numbers, 0)
            prctl = _prctl()
            parent = os.getpid()
            for _ in range(min(self.processes, count)):
                # An interrupt must not be handled during the fork: CPython would run
                # the handler inside an at-fork callback (logging registers some) and
                # discard its exception. The worker inherits the mask and ignores the
                # signals before releasing them.
                held = hold_interrupts()
                try:
                    pid = os.fork()
                    if pid == 0:  # the worker; it never returns
                        self._worker(task_r, task_w, res_r, res_w, run, prctl, parent, held)
                    pids.append(pid)
                finally:
                    release_interrupts(held)
            os.close(task_r)
            task_r = -1
            os.close(res_w)
            res_w = -1
            if sent == len(numbers):
                os.close(task_w)
                task_w = -1
            pending = b""
            failed = False
            while True:
                if task_w >= 0:
                    readable, _w, _x = select.select([res_r], [task_w], [])
                    sent = _write_some(task_w, numbers, sent)
                    if sent == len(numbers):
                        os.close(task_w)
                        task_w = -1
                    if not readable:
                        continue
                data = os.read(res_r, 64 * self._RECORD.size)
                if not data:
                    break  # every worker has exited
                pending += data
                usable = len(pending) - len(pending) % self._RECORD.size
                for i, status, *values in self._RECORD.iter_unpack(pending[:usable]):
                    if status:
                        failed = True
                        continue
                    done[i] = 1
                    finished(i, ExtractStats(**dict(zip(COUNTER_FIELDS, values))))
                pending = pending[usable:]
                if failed:
                    _kill(pids)  # their pipe ends close: the loop ends soon
                    if task_w >= 0:
                        os.close(task_w)
                        task_w = -1
        except BaseException:
            _kill(pids)
            raise
        finally:
            for fd in (task_r, task_w, res_r, res_w):
                if fd >= 0:
                    os.close(fd)
            for pid in pids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        return [i for i in range(count) if not done[i]]

    def _worker(self, task_r: int, task_w: int, res_r: int, res_w: int,
                run: Callable[[int, ExtractStats], None], prctl: Any, parent: int,
                held: Any) -> None:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            release_interrupts(held)
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                return  # the parent is already gone
            os.close(task_w)
            os.close(res_r)
            gc.disable()
            while True:
                number = os.read(task_r, 4)
                if len(number) < 4:
                    break
                i = int.from_bytes(number, "little")
                counters = ExtractStats()
                status = 0
                try:
                    run(i, counters)
                except BaseException:
                    status = 1
                os.write(res_w, self._RECORD.pack(
                    i, status, *[getattr(counters, name) for name in COUNTER_FIELDS]))
                if status:
                    break
            code = 0
        finally:
            os._exit(code)


_PR_SET_PDEATHSIG = 1


def _prctl() -> Any:
    """libc's ``prctl`` (None where there is none)."""
    try:
        import ctypes

        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


def _write_some(fd: int, data: bytes, sent: int) -> int:
    """Write ``data[sent:]`` to a non-blocking pipe in atomic 4 KiB pieces (whole task
    numbers) until it is full; returns the new ``sent``."""
    while sent < len(data):
        try:
            sent += os.write(fd, data[sent : sent + 4096])
        except BlockingIOError:
            break
    return sent


def _kill(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def assembly_threads(source: Any, workers: int) -> int:
    """Worker threads for the assembly: ``-n``, but at most one per CPU plus one when
    every store is local.

    Local fetches are CPU-bound (decompression, hashing); threads beyond the cores only
    contend for the interpreter lock. Remote stores keep ``-n`` requests in flight.
    """
    from desync_core.stores.wrappers import iter_members
    from desync_core.workers import default_workers

    members = list(iter_members(source))
    if members and all(getattr(m, "is_local", False) for m in members):
        return max(1, min(workers, default_workers() + 1))
    return max(1, workers)


def assembly_processes(source: Any, workers: int, seeds: Sequence[Seed]) -> int:
    """Worker processes for the first assembly phase: one per CPU (at most ``-n``) when
    every store and every seed declares ``fork_safe`` (and the stores ``is_local``);
    else 1 (threads only).

    Remote stores are waited for, not computed on, and their connections must not be
    shared by several processes; seeds may hold such connections too.
    """
    from desync_core.stores.wrappers import iter_members
    from desync_core.workers import default_workers

    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return 1
    if not all(getattr(seed, "fork_safe", False) for seed in seeds):
        return 1
    members = list(iter_members(source))
    if not members or not all(getattr(m, "fork_safe", False) and getattr(m, "is_local", False)
                              for m in members):
        return 1
    # More processes than CPUs was measured slower (3 and 4 on 2 CPUs: more CPU time,
    # no shorter runs).
    return max(1, min(workers, default_workers()))


INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def hold_interrupts() -> Any:
    """Block SIGINT and SIGTERM for this thread; returns what :func:`release_interrupts`
    needs (None where signals cannot be blocked). Signals that arrive meanwhile are
    delivered when they are released."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)


def release_interrupts(held: Any) -> None:
    """Restore the signal mask saved by :func:`hold_interrupts`."""
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


