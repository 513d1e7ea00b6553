"""Worker threads: :class:`ThreadPool` for a stream of tasks with per-thread state
(``extract``), :class:`Threads` where an ``Executor`` is wanted (``make``, ``tar``,
``cache``, ``verify``).

Both follow the engine's interrupt handling (:mod:`~desync_core.engine.interrupts`):
an error or an interrupt drops the tasks that are queued instead of running them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from desync_core.engine.interrupts import (
    CANCEL_GRACE_SECONDS,
    interrupts_held,
    start_thread,
    unblock_interrupts,
)

T = TypeVar("T")

_STOP = object()


class ThreadPool:
    """Applies ``fn(item, state)`` to items on ``workers`` daemon threads.

    At most ``2 * workers`` items wait in the queue. The first error (or an exception
    in the calling thread, such as KeyboardInterrupt) sets ``cancelled``; workers then
    skip what is left and the error is raised by :meth:`run`. Workers are daemon
    threads, so one stuck in a blocking call (a hung network store) cannot keep the
    process alive after an interruption: if they do not finish within
    :data:`CANCEL_GRACE_SECONDS` they are left behind and :attr:`abandoned` is set
    (the caller must then not close what they use).
    """

    def __init__(self, workers: int, cancelled: threading.Event, name: str = "desync-work"
                 ) -> None:
        self.workers = max(1, workers)
        self.cancelled = cancelled
        self.name = name
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

        threads = [threading.Thread(target=worker, name=f"{self.name}-{k}", daemon=True)
                   for k in range(self.workers)]
        for t in threads:
            start_thread(t)
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
    start_thread(timer)
    try:
        for t in threads:
            while t.is_alive() and not deadline.is_set():
                t.join(0.05)
    finally:
        timer.cancel()
    return any(t.is_alive() for t in threads)


class Threads(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` (``workers`` threads, at least one) whose ``with`` block,
    when left by an exception (an error, an interrupt), cancels the queued tasks instead
    of running them before it returns; running ones are waited for."""

    def __init__(self, workers: int, name: str = "desync-work") -> None:
        super().__init__(max(1, workers), thread_name_prefix=name,
                         initializer=unblock_interrupts)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown(wait=True, cancel_futures=exc_type is not None)

    def _adjust_thread_count(self) -> None:
        # Where ThreadPoolExecutor starts its threads: see start_thread (the threads
        # unblock the interrupts first: the initializer).
        with interrupts_held():
            super()._adjust_thread_count()


__all__ = ["ThreadPool", "Threads"]
