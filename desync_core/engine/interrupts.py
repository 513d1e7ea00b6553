"""The engine's one interrupt handling.

The parent process decides: SIGINT and SIGTERM are delivered there (the CLI turns both
into exit status 130, ``Error: interrupted``). Workers ignore them and die with their
parent (``PR_SET_PDEATHSIG``), so a parent killed outright leaves no worker behind. On
an interrupt the parent kills its worker processes, drops queued thread tasks, waits
for busy threads at most :data:`CANCEL_GRACE_SECONDS`, and its callers remove what
they created (a temporary output) before the status is returned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: How long an interrupted run waits for busy worker threads before leaving them behind.
CANCEL_GRACE_SECONDS = 2.0

INTERRUPTS = {signal.SIGINT, signal.SIGTERM}

_PR_SET_PDEATHSIG = 1


def hold_interrupts() -> Any:
    """Block SIGINT and SIGTERM for this thread; returns what :func:`release_interrupts`
    needs (None where signals cannot be blocked). Signals that arrive meanwhile are
    delivered when they are released.

    A handler already due runs (and raises) here, with the mask restored: the Python
    handler of a signal that came just before runs after the next call returns, and the
    mask returned by the blocking call would be lost with it - leaving this thread
    deaf to interrupts for good.
    """
    if not hasattr(signal, "pthread_sigmask"):
        return None
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # nothing is blocked if this raises
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    return old


def release_interrupts(held: Any) -> None:
    """Restore the signal mask saved by :func:`hold_interrupts` (an interrupt that came
    meanwhile is raised here)."""
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """:func:`hold_interrupts` for the ``with`` block. For steps that an exception
    raised by a signal handler would cut in two: creating a file and recording it
    for its clean-up, starting a thread or forking and recording the worker."""
    held = hold_interrupts()
    try:
        yield
    finally:
        release_interrupts(held)


def unblock_interrupts() -> None:
    """Let this thread receive SIGINT and SIGTERM (for threads started with them held,
    which inherit the mask: else so would every program they start)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


def start_thread(thread: threading.Thread) -> None:
    """``thread.start()`` with interrupts held.

    Python's ``Thread.start`` is not safe against the exception of a signal handler
    (3.11: raised after the thread began, it is taken for a failed start, whose
    clean-up then fails with a KeyError - a bug, exit 70, instead of an interrupt).
    The new thread restores the mask first thing: it would inherit the held one, and
    so would every program it starts (an ``ssh`` unable to receive SIGTERM).
    """
    held = hold_interrupts()
    run = thread.run

    def run_with_mask() -> None:
        release_interrupts(held)  # (no handler runs outside the main thread)
        run()

    thread.run = run_with_mask  # type: ignore[method-assign]
    try:
        thread.start()
    finally:
        release_interrupts(held)


def _prctl() -> Any:
    """libc's ``prctl`` (None where there is none)."""
    try:
        import ctypes

        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


_prctl_fn: Any = None


def prepare_fork() -> None:
    """Look up what :func:`enter_child` needs before forking (not again in every child)
    - if ctypes is loaded already: else each child imports it (~3 ms) while the parent
    goes on, instead of the parent before it can start (``untar`` of a small archive)."""
    global _prctl_fn
    if _prctl_fn is None and "ctypes" in sys.modules:
        _prctl_fn = _prctl() or False


def enter_child(parent: int, held: Any) -> bool:
    """First thing in a forked worker: ignore interrupts (the parent decides), release
    the signal mask the fork was made under, die with the parent. False if the parent
    is already gone (the worker should exit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    release_interrupts(held)
    prctl = _prctl() if _prctl_fn is None else _prctl_fn
    if prctl:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    return os.getppid() == parent


__all__ = ["CANCEL_GRACE_SECONDS", "INTERRUPTS", "enter_child", "hold_interrupts",
           "interrupts_held", "prepare_fork", "release_interrupts", "start_thread",
           "unblock_interrupts"]
