"""A pool of forked workers for numbered tasks (:class:`ForkPool`), and an
``Executor`` front of it (:class:`ForkExecutor`).

Threads share one interpreter lock: measured on the 2-core benchmark machine, the
hand-offs between two extract threads cost ~0.35 s of user and ~0.17 s of system time
per 400 MB. Forked workers share nothing at run time. They inherit the work (a plan,
open files, stores: nothing is pickled on the way in) and take task numbers from one
pipe: the parent writes 4-byte numbers in atomic pieces, and every read of 4 bytes by a
worker takes exactly one, so the tasks balance over the workers without locks. Each
result comes back on the worker's own pipe (any size, no interleaving). The first
error of a worker is raised in the parent with its class, message and exit code
(:mod:`~desync_core.engine.errors`); a worker that dies is a
:class:`~desync_core.engine.errors.WorkerDiedError`. Either way, and on an interrupt
in the parent, every worker is killed and reaped before the error propagates.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import select
from collections.abc import Callable, Generator
from concurrent.futures import Executor, Future
from typing import Any

from desync_core.engine.errors import WorkerDiedError, died
from desync_core.engine.forks import DONE, ERROR, MSG, RESULT, Messages, fork, kill, write_all

_TASK = 4  # bytes of a task number on the pipe


class ForkPool:
    """Runs numbered tasks ``0..count-1`` on ``processes`` forked workers (Linux).

    Args:
        processes: workers (at most one per task are forked).
        init: called once in each worker before its first task.
        pipe_size: capacity asked for the task pipe; numbers that do not fit are
            written as workers take the others.
        what: how errors name a worker.
    """

    def __init__(self, processes: int, *, init: Callable[[], None] | None = None,
                 pipe_size: int = 1 << 20, what: str = "a worker process") -> None:
        self.processes = max(1, processes)
        self.init = init
        self.pipe_size = pipe_size
        self.what = what

    def run(self, count: int, task: Callable[[int], bytes | None],
            finished: Callable[[int, bytes], None]) -> None:
        """Run ``task(i)`` in the workers for every ``i``; ``finished(i, result)`` is
        called here as each completes (``result``: the bytes ``task`` returned).

        Raises:
            the first error a worker raised (the other workers are killed at once), or
            WorkerDiedError when workers died without a word: the others go on with
            the tasks, and the error's ``unfinished`` lists the task numbers nobody
            completed (for the caller to run again elsewhere, or to report).
        """
        with contextlib.closing(self.results(count, task)) as results:
            for i, result in results:
                finished(i, result)

    def results(self, count: int, task: Callable[[int], bytes | None]
                ) -> Generator[tuple[int, bytes], None, None]:
        """``(i, result)`` of every task as it completes (see :meth:`run`). Closing the
        iterator early stops (kills) the workers."""
        if count <= 0:
            return
        import numpy as np

        numbers = np.arange(count, dtype="<u4").tobytes()
        task_r, task_w = os.pipe2(os.O_CLOEXEC)
        workers: dict[int, tuple[int, Messages]] = {}  # result fd -> (pid, messages)
        pids: list[int] = []
        clean = False
        try:
            with contextlib.suppress(OSError):  # room for every number at once, ideally
                fcntl.fcntl(task_w, fcntl.F_SETPIPE_SZ, min(len(numbers), self.pipe_size))
            os.set_blocking(task_w, False)
            sent = _write_some(task_w, numbers, 0)
            for _ in range(min(self.processes, count)):
                res_r, res_w = os.pipe2(os.O_CLOEXEC)
                try:
                    pid = fork(self._worker(task_r, res_w, task), report_fd=res_w,
                               close=[task_w, res_r], done=MSG.pack(DONE, 0), pids=pids)
                finally:
                    os.close(res_w)
                workers[res_r] = (pid, Messages(res_r, RESULT, self.what))
            os.close(task_r)
            task_r = -1
            if sent == len(numbers):
                os.close(task_w)
                task_w = -1
            done = bytearray(count)
            finished: set[int] = set()  # result fds of the workers that said DONE
            dead: WorkerDiedError | None = None
            while workers:
                wanted = [task_w] if task_w >= 0 else []
                readable, writable, _x = select.select(list(workers), wanted, [])
                if writable:
                    sent = _write_some(task_w, numbers, sent)
                    if sent == len(numbers):
                        os.close(task_w)
                        task_w = -1
                for fd in readable:
                    pid, messages = workers[fd]
                    for tag, value in messages.read():
                        if tag == RESULT:
                            i = int.from_bytes(value[:_TASK], "little")
                            done[i] = 1
                            yield i, value[_TASK:]
                        elif tag == ERROR:
                            raise value
                        elif tag == DONE:
                            finished.add(fd)
                    if messages.eof:
                        del workers[fd]
                        messages.close()
                        if fd not in finished:
                            pids.remove(pid)
                            dead = dead or died(self.what, os.waitpid(pid, 0)[1])
            if dead is not None or not all(done):
                dead = dead or died(self.what, -1)
                dead.unfinished = tuple(i for i in range(count) if not done[i])
                raise dead
            clean = True
        finally:
            if not clean:
                for pid in pids:
                    kill(pid)
            for fd in (task_r, task_w):
                if fd >= 0:
                    os.close(fd)
            for _pid, messages in workers.values():
                messages.close()
            for pid in pids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def _worker(self, task_r: int, res_w: int, task: Callable[[int], bytes | None]
                ) -> Callable[[], None]:
        def work() -> None:
            if self.init is not None:
                self.init()
            while True:
                number = os.read(task_r, _TASK)
                if len(number) < _TASK:
                    return  # no tasks left
                result = task(int.from_bytes(number, "little")) or b""
                write_all(res_w, MSG.pack(RESULT, _TASK + len(result)) + number + result)

        return work


def _write_some(fd: int, data: bytes, sent: int) -> int:
    """Write ``data[sent:]`` to a non-blocking pipe in atomic 4 KiB pieces (whole task
    numbers) until it is full; returns the new ``sent``."""
    while sent < len(data):
        try:
            sent += os.write(fd, data[sent : sent + 4096])
        except BlockingIOError:
            break
    return sent


class _ForkFuture(Future[Any]):
    """A future whose result is waited for by running the pool."""

    def __init__(self, owner: ForkExecutor) -> None:
        super().__init__()
        self._owner = owner

    def result(self, timeout: float | None = None) -> Any:
        self._owner._wait_for(self)
        return super().result(timeout)


class ForkExecutor(Executor):
    """A :class:`ForkPool` behind the ``concurrent.futures`` interface, for code written
    against an ``Executor`` (``chop`` and ``verify-index``:
    :func:`desync_core.ops.chunkfile.run_tasks`).

    Submitted calls are collected; the first wait for a result forks the workers,
    which inherit the calls (arguments are not pickled); results come back pickled.
    Nothing can be submitted after that. Leaving the ``with`` block (or
    :meth:`shutdown`) stops workers still running.
    """

    def __init__(self, processes: int, init: Callable[[], None] | None = None) -> None:
        self._pool = ForkPool(processes, init=init)
        self._calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._futures: list[_ForkFuture] = []
        self._results: Generator[tuple[int, bytes], None, None] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)`` (run in a worker once a result is waited for)."""
        if self._results is not None:
            raise RuntimeError("ForkExecutor: the workers are already running")
        future = _ForkFuture(self)
        self._calls.append((fn, args, kwargs))
        self._futures.append(future)
        return future

    def _run_call(self, i: int) -> bytes:  # in a worker
        fn, args, kwargs = self._calls[i]
        return pickle.dumps(fn(*args, **kwargs), protocol=pickle.HIGHEST_PROTOCOL)

    def _wait_for(self, future: _ForkFuture) -> None:
        if future.done():
            return
        if self._results is None:
            self._results = self._pool.results(len(self._calls), self._run_call)
        for i, data in self._results:
            done = self._futures[i]
            if done.set_running_or_notify_cancel():
                done.set_result(pickle.loads(data))
            if future.done():
                return

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers if they are still running (their tasks are dropped)."""
        if self._results is not None:
            self._results.close()
        for future in self._futures:
            future.cancel()


__all__ = ["ForkExecutor", "ForkPool"]
