"""How an error crosses from a forked worker to the process that forked it.

The engine's one error transport: a worker that fails sends its exception as bytes
(:func:`pack_error`) on its report pipe and exits; the parent rebuilds it
(:func:`unpack_error`) and raises it, so the user sees the same one-line message and
exit code as if the work had run in the parent. A worker that dies without a word
(killed by a signal, out of memory) becomes a :class:`WorkerDiedError` naming how it
ended.
"""

from __future__ import annotations

import os
import pickle
import signal

from desync_core.errors import DesyncError


class Aborted(BaseException):
    """The parent stopped the work (it failed, was interrupted, or is gone): a worker
    that sees this just exits."""


class WorkerDiedError(DesyncError):
    """A worker process ended without reporting (killed by a signal, or exited)."""

    #: Numbered tasks (:class:`~desync_core.engine.ForkPool`) that nobody completed.
    unfinished: tuple[int, ...] = ()


class ChildError(Exception):
    """A child reported an error or died; ``error`` is what to raise."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def pack_error(exc: BaseException) -> bytes:
    """An exception as bytes for :func:`unpack_error` in another process.

    Pickled as it is where that works (e.g. OSError); otherwise its class, message and
    picklable attributes travel and the object is rebuilt without calling its
    ``__init__`` (error classes with their own signatures, such as ChunkMissingError, do
    not unpickle otherwise). A bug (not a DesyncError or OSError) becomes a
    RuntimeError carrying the worker's traceback, so it is still reported as a bug.
    """
    if not isinstance(exc, (DesyncError, OSError)):
        import traceback

        text = "".join(traceback.format_exception(exc))
        exc = RuntimeError(f"a worker process failed:\n{text}")
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
        return DesyncError("a worker process failed")


def died(what: str, status: int) -> WorkerDiedError:
    """The error for a worker that ended with wait status ``status`` without a report."""
    if status < 0:  # not known (still being reaped)
        return WorkerDiedError(f"{what} ended unexpectedly")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return WorkerDiedError(f"{what} was killed by {name}")
    code = os.waitstatus_to_exitcode(status)
    return WorkerDiedError(f"{what} ended unexpectedly (exit status {code})")


__all__ = ["Aborted", "ChildError", "WorkerDiedError", "died", "pack_error", "unpack_error"]
