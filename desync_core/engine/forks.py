"""Forked worker processes: the one way the core forks, and how a worker talks back.

:func:`fork` starts a worker that runs a function and exits (never returning into the
caller's code): it ignores SIGINT/SIGTERM and dies with its parent
(:mod:`~desync_core.engine.interrupts`), and an exception it raises is sent on its
report pipe (:mod:`~desync_core.engine.errors`) as an ``ERROR`` message, which
:class:`Messages` turns back into the exception in the parent. Messages are
``MSG`` records (a tag byte and a 64-bit value); tags that carry a payload have its
length as value and the payload after it. Workers inherit everything (no pickling of
the work: plans, stores, shared memory rings); only results and errors travel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from desync_core.engine.errors import Aborted, died, pack_error, unpack_error
from desync_core.engine.interrupts import (
    enter_child,
    hold_interrupts,
    prepare_fork,
    release_interrupts,
)

MSG = struct.Struct("<cQ")
#: Tags of the engine's own messages: an error (payload: :func:`pack_error`), a
#: result (payload), the worker is done.
ERROR, RESULT, DONE = b"E", b"R", b"D"


def can_fork() -> bool:
    """Whether a process can be forked safely here (no other threads are running)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def fork(body: Callable[[], None], *, report_fd: int, close: Iterable[int] = (),
         done: bytes = b"", pids: list[int] | None = None) -> int:
    """Fork a worker that runs ``body()`` and exits; returns its pid.

    In the worker the descriptors in ``close`` are closed first (the parent's ends of
    its pipes: a pipe's reader sees its end only when every writer closed it). ``done``
    is written to ``report_fd`` when ``body`` returns or raises :class:`Aborted`; an
    exception is sent there as an ``ERROR`` message (exit status 1).

    SIGINT/SIGTERM are held during the fork: CPython would otherwise run a handler
    inside an at-fork callback and discard its exception; they are delivered after.
    The pid is appended to ``pids`` (the caller's list of workers to kill and reap)
    before that: an interrupt delivered between the fork and the caller recording the
    pid would leave a worker nobody stops, running the tasks until the parent exits.
    """
    prepare_fork()
    parent = os.getpid()
    held = hold_interrupts()
    try:
        pid = os.fork()
        if pid == 0:
            _child(parent, held, body, report_fd, close, done)
        if pids is not None:
            pids.append(pid)
    finally:
        release_interrupts(held)
    return pid


def _child(parent: int, held: Any, body: Callable[[], None], report_fd: int,
           close: Iterable[int], done: bytes) -> NoReturn:
    code = 1
    try:
        if enter_child(parent, held):  # (else the parent is already gone: exit)
            for fd in close:
                os.close(fd)
            code = 0
            try:
                body()
            except Aborted:
                pass
            if done:
                with contextlib.suppress(OSError):  # the parent is gone
                    write_all(report_fd, done)
    except BaseException as exc:  # everything goes to the parent
        code = 1
        with contextlib.suppress(BaseException):  # nothing left to tell it with
            send_error(report_fd, exc)
    finally:
        os._exit(code)


def send_error(fd: int, exc: BaseException) -> None:
    """Send ``exc`` as an ``ERROR`` message (for :class:`Messages` in the parent)."""
    data = pack_error(exc)
    write_all(fd, MSG.pack(ERROR, len(data)) + data)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write everything (to a blocking pipe)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def kill(pid: int) -> None:
    """SIGKILL a worker (nothing if it is gone)."""
    if pid <= 0:  # never a process group
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def reap(pid: int, grace: float = 5.0) -> int:
    """Wait up to ``grace`` seconds for a worker that was told to stop, then kill it;
    returns its wait status."""
    deadline = time.monotonic() + grace
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            kill(pid)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.002)


class Messages:
    """Reads ``MSG`` messages from a worker's report pipe (made non-blocking).

    Args:
        fd: the read end.
        payload_tags: tags whose value is the length of a payload that follows
            (``ERROR`` always is one; its payload is returned as the exception).
        what: how an error names the worker (``"the writing process"``).
    """

    def __init__(self, fd: int, payload_tags: bytes = RESULT, what: str = "a worker process"
                 ) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False
        self.what = what
        self.payload_tags = {bytes([t]) for t in payload_tags} | {ERROR}
        os.set_blocking(fd, False)

    def read(self) -> list[tuple[bytes, Any]]:
        """The complete messages available now (an error as ``(ERROR, exception)``)."""
        try:
            while True:
                data = os.read(self.fd, 1 << 16)
                if not data:
                    self.eof = True
                    break
                self.buf += data
                if len(data) < 1 << 16:
                    break
        except BlockingIOError:
            pass
        out: list[tuple[bytes, Any]] = []
        buf = self.buf
        pos = 0
        head = MSG.size
        tags = self.payload_tags
        while len(buf) - pos >= head:
            tag, value = MSG.unpack_from(buf, pos)
            if tag in tags:
                if len(buf) - pos < head + value:
                    if self.eof:  # cut off: the worker died while reporting
                        out.append((ERROR, died(self.what, -1)))
                        pos = len(buf)
                    break
                body = buf[pos + head:pos + head + value]
                out.append((tag, unpack_error(body) if tag == ERROR else body))
                pos += head + value
            else:
                out.append((tag, value))
                pos += head
        self.buf = buf[pos:]
        return out

    def close(self) -> None:
        """Close the read end (once)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


__all__ = ["DONE", "ERROR", "MSG", "RESULT", "Messages", "can_fork", "fork", "kill", "reap",
           "send_error", "write_all"]
