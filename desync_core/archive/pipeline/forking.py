"""Forked children of the pipeline: when forking is safe, the child entry point, and how
errors travel back to the parent (class, exit code and message preserved)."""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import struct
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from desync_core.archive.base import Node
from desync_core.errors import DesyncError

S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
LEN = struct.Struct("<Q")
MSG = struct.Struct("<cQ")
END = 0
ABORT = (1 << 64) - 1
# writer -> here: batch acknowledged, done, error; fetcher -> here: produced, error
ACK, DONE, ERROR, PRODUCED = b"A", b"D", b"E", b"P"
# chunk worker -> here: the ids of a run (payload: seq + ids)
RESULT = b"R"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
NODE_FIELDS = tuple(Node.__dataclass_fields__)


def can_fork() -> bool:
    """Whether a process can be forked safely here (no other threads are running)."""
    return hasattr(os, "fork") and threading.active_count() == 1


class Aborted(BaseException):
    """The decoding process stopped (it failed, or it is gone): a child just exits."""


class ChildError(Exception):
    """A child reported an error or died; ``error`` is what to raise."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# -- errors across processes -----------------------------------------------------------


def pack_error(exc: BaseException) -> bytes:
    """An exception as bytes for :func:`unpack_error` in another process.

    Pickled as it is where that works (e.g. OSError); otherwise its class, message and
    picklable attributes travel and the object is rebuilt without calling its
    ``__init__`` (error classes with their own signatures, such as ChunkMissingError, do
    not unpickle otherwise). A bug (not a DesyncError or OSError) becomes a
    RuntimeError carrying the child's traceback.
    """
    if not isinstance(exc, (DesyncError, OSError)):
        import traceback

        text = "".join(traceback.format_exception(exc))
        exc = RuntimeError(f"an extraction process failed:\n{text}")
    try:
        data = pickle.dumps(exc)
        back = pickle.loads(data)
        if type(back) is type(exc) and str(back) == str(exc):
            return b"P" + data
    except Exception:  # rebuilt below
        pass
    state = {}
    for key, value in getattr(exc, "__dict__", {}).items():
        try:
            pickle.dumps(value)
        except Exception:  # unpicklable attributes (e.g. stores) stay behind
            continue
        state[key] = value
    try:
        data = pickle.dumps((type(exc), exc.args, state))
        pickle.loads(data)
    except Exception:
        data = pickle.dumps((DesyncError, (str(exc),), {}))
    return b"R" + data


def unpack_error(data: bytes) -> BaseException:
    """The exception :func:`pack_error` packed."""
    try:
        if data[:1] == b"P":
            return pickle.loads(data[1:])
        cls, args, state = pickle.loads(data[1:])
        exc = cls.__new__(cls)
        exc.args = args
        exc.__dict__.update(state)
        return exc
    except Exception:
        return DesyncError("an extraction process failed")


def send_error(fd: int, exc: BaseException) -> None:
    data = pack_error(exc)
    os.write(fd, MSG.pack(ERROR, len(data)) + data)


def child_main(report_fd: int, body: Callable[[], None], done: bytes = b"") -> NoReturn:
    """Run a forked child's ``body`` and exit; never returns.

    The parent decides about interrupts (SIGINT is ignored here). ``done`` is written to
    ``report_fd`` when ``body`` returns or is aborted by the parent; an error is sent
    there (exit status 1), as far as the pipe still takes it.
    """
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        body()
        if done:
            os.write(report_fd, done)
    except Aborted:
        if done:
            try:
                os.write(report_fd, done)
            except OSError:
                pass  # the parent is gone
    except BaseException as exc:  # everything goes to the parent
        code = 1
        try:
            send_error(report_fd, exc)
        except BaseException:  # nothing left to tell it with
            pass
    finally:
        os._exit(code)


# -- the writer ------------------------------------------------------------------------


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap(pid: int) -> None:
    """Wait a little for a child that was told to stop, then kill it."""
    import time

    deadline = time.monotonic() + 5
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        if time.monotonic() > deadline:
            kill(pid)
            os.waitpid(pid, 0)
            return
        time.sleep(0.002)


class Messages:
    """Reads ``MSG`` messages (and error payloads) from a child's pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False
        os.set_blocking(fd, False)

    def read(self) -> list[tuple[bytes, Any]]:
        """The complete messages available now (an error as ``(b"E", exception)``)."""
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
        while len(buf) - pos >= head:
            tag, value = MSG.unpack_from(buf, pos)
            if tag in (ERROR, RESULT):  # a payload follows
                if len(buf) - pos < head + value:
                    if self.eof:
                        out.append((ERROR, DesyncError("a worker process failed")))
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


