"""Pre-forked worker processes: one server on every core (#18).

``--workers N`` (default: two per CPU, :data:`WORKERS_PER_CPU`) runs the server in ``N``
processes. The main process (the supervisor) binds every listener, prints
``listening on …``, then forks the workers, which inherit the listening sockets: each
new connection goes to one of the workers polling them (non-blocking ``accept``). Each
worker builds its own application (its own upstream store objects and connections:
nothing with a socket or a thread crosses the fork) and serves with the threads of
:class:`~desync_store_http.server.ServerGroup`.

The supervisor only handles signals and children:

* SIGTERM/SIGINT: every worker gets SIGTERM and is waited for (SIGKILL after
  :data:`STOP_TIMEOUT`); then the supervisor exits 0. No process is left behind.
* SIGHUP: forwarded to every worker; with ``--store-file`` each worker re-reads it.
* A worker that dies is reported and replaced. Workers that fail right after starting
  (:data:`QUICK_FAILURES` in a row, each within :data:`QUICK_EXIT` seconds — a store that
  cannot be opened any more, say) stop the server with exit status 1.
* A worker whose supervisor disappears (SIGKILL) stops by itself within a second.

What is per worker: the coalescing of concurrent GETs of one chunk (one upstream read
per chunk per worker at a time), the upload memory budget and slots (the totals are
divided between the workers, so the bound of the whole server stays the same), the
request-log file handle (lines are appended, whole, with ``O_APPEND``). Metrics are
added up over every worker (:mod:`desync_store_http.metrics`).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

from desync_store_http.fastlane import ConnectionBoard
from desync_store_http.server import ServerGroup, serve_until_stopped
from desync_store_http.uploads import UploadGate

#: Seconds the workers get to finish after SIGTERM before they are killed.
STOP_TIMEOUT = 30.0
#: A worker that exits sooner than this after its start failed to start.
QUICK_EXIT = 2.0
#: This many failed starts in a row stop the server.
QUICK_FAILURES = 3
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


#: Default workers per CPU. The threads of one process take turns holding the GIL, and
#: every system call of a request (recv, open, sendfile…) is a turn: with 32 clients on
#: one process the hand-overs cost more than the requests. Two processes per core keep
#: each core busy (measured: 1 per CPU ≈ 49 %, 2 per CPU ≈ 62 % of nginx, 4 ≈ 62 %).
WORKERS_PER_CPU = 2


def worker_count(requested: int | None) -> int:
    """``--workers``: the number given, or :data:`WORKERS_PER_CPU` per CPU for 0/None."""
    if requested:
        return requested
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus) * WORKERS_PER_CPU


def run_server(group: ServerGroup, make_app: Callable[[], Any], *, workers: int,
               reload: Callable[[Any], object] | None = None,
               out: TextIO | None = None) -> int:
    """Serve ``group`` until SIGINT/SIGTERM, in one process or in ``workers``.

    ``make_app`` builds the application (a configuration error raises before anything
    listens); with several workers each worker calls it again for its own copy.
    ``reload(app)`` runs on SIGHUP (in every worker).

    Returns:
        0 after a clean shutdown, 1 when workers keep failing at start.
    """
    app = make_app()
    if workers <= 1:
        group.set_app(app)
        try:
            return serve_until_stopped(group, (lambda: reload(app)) if reload else None, out)
        finally:
            app.close()
    app.close()  # it proved the configuration; each worker opens its own
    settings = group.settings
    gate = settings.uploads
    settings.uploads = UploadGate(budget=math.ceil(gate.budget / workers),
                                  slots=math.ceil(gate.slots / workers), wait=gate.wait)
    return Supervisor(group, make_app, workers, reload, out or sys.stderr).run()


class Supervisor:
    """The main process of a server with pre-forked workers (see the module doc)."""

    def __init__(self, group: ServerGroup, make_app: Callable[[], Any], workers: int,
                 reload: Callable[[Any], object] | None, out: TextIO) -> None:
        self.group = group
        self.make_app = make_app
        self.count = workers
        self.reload = reload
        self.out = out
        self.pid = os.getpid()
        #: pid → start time (monotonic) of each running worker.
        self.workers: dict[int, float] = {}
        #: pid → the worker's row on the fast lanes' connection board.
        self.rows: dict[int, int] = {}
        self.quick_failures = 0
        self.stopping = False

    def report(self, message: str) -> None:
        """One line on the error stream."""
        self.group.settings.report(message)

    def run(self) -> int:
        """Bind, fork the workers, supervise until stopped; the exit status."""
        watched = _SIGNALS | {signal.SIGCHLD}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        # A handler (never run: the signal stays blocked) so that SIGCHLD is queued for
        # sigtimedwait rather than discarded as its default action "ignore" would allow.
        old_chld = signal.signal(signal.SIGCHLD, _ignore)
        status = 0
        try:
            for url in self.group.bind():
                self.out.write(f"listening on {url}\n")
            self.out.flush()
            # Shared with the workers (created before they are forked): where each
            # worker's fast lanes say how many connections they hold.
            self.group.board = ConnectionBoard(self.count, len(self.group.servers))
            for _ in range(self.count):
                self._spawn()
            while True:
                info = signal.sigtimedwait(watched, 1.0)
                if not self._reap():
                    status = 1
                    break
                if info is None or info.si_signo == signal.SIGCHLD:
                    continue
                if info.si_signo == signal.SIGHUP:
                    self._signal_all(signal.SIGHUP)
                    continue
                break
        finally:
            self.stopping = True
            self._stop_workers()
            self.group.stop()
            metrics = self.group.settings.metrics
            if metrics is not None:
                metrics.cleanup()
            signal.signal(signal.SIGCHLD, old_chld)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return status

    def _spawn(self) -> None:
        sys.stdout.flush()
        self.out.flush()
        row = min(set(range(self.count)) - set(self.rows.values()))
        if self.group.board is not None:
            self.group.board.clear(row)
        self.group.worker_index = row
        pid = os.fork()
        if pid == 0:
            self._worker()
        self.workers[pid] = time.monotonic()
        self.rows[pid] = row

    def _reap(self) -> bool:
        """Collect exited workers and replace them; False when they keep failing."""
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return True
            started = self.workers.pop(pid, None)
            if started is None:
                continue  # not a worker (nothing else is forked here)
            row = self.rows.pop(pid, None)
            if row is not None and self.group.board is not None:
                self.group.board.clear(row)
            metrics = self.group.settings.metrics
            if metrics is not None:
                metrics.process_dead(pid)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(raw)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            if time.monotonic() - started < QUICK_EXIT and code != 0:
                self.quick_failures += 1
            else:
                self.quick_failures = 0
            if self.quick_failures >= QUICK_FAILURES:
                self.report(f"worker process {pid} {how}; workers keep failing at start, "
                            "stopping the server")
                return False
            self.report(f"worker process {pid} {how}; starting a new one")
            self._spawn()

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _stop_workers(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.workers and time.monotonic() < deadline:
            self._reap()
            if self.workers:
                signal.sigtimedwait({signal.SIGCHLD}, 0.05)
        if self.workers:
            self._signal_all(signal.SIGKILL)
            for pid in list(self.workers):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                self.workers.pop(pid, None)

    def _worker(self) -> NoReturn:
        """The body of a worker process (never returns)."""
        status = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Signals stay blocked (inherited mask) and are taken with sigtimedwait.
            app = self.make_app()
            try:
                self.group.set_app(app)
                self.group.start()
                while os.getppid() == self.pid:
                    info = signal.sigtimedwait(_SIGNALS, 1.0)
                    if info is None:
                        continue
                    if info.si_signo != signal.SIGHUP:
                        break
                    if self.reload is not None:
                        self.reload(app)
                status = 0
            finally:
                self.group.stop()
                app.close()
        except Exception as exc:  # report and exit: the supervisor decides what follows
            from desync_core.plugin_api import DesyncError, error_text

            if isinstance(exc, DesyncError):
                self.report(f"worker process {os.getpid()}: {error_text(exc)}")
            else:
                self.report(f"worker process {os.getpid()}: {traceback.format_exc()}")
        finally:
            try:
                sys.stdout.flush()
                self.out.flush()
            finally:
                os._exit(status)


def _ignore(signum: int, frame: object) -> None:
    """A SIGCHLD handler that never runs (the signal is blocked and waited for)."""


__all__ = ["QUICK_EXIT", "QUICK_FAILURES", "STOP_TIMEOUT", "WORKERS_PER_CPU", "Supervisor",
           "run_server", "worker_count"]
