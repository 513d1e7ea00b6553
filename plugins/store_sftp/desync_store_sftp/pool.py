"""A pool of up to ``n`` SFTP sessions shared by a store's worker threads.

Sessions are opened on demand (a store that is never used never connects, and a
pickled store reconnects in the process that unpickles it), at most ``n`` at a time;
a thread that finds them all busy waits for one. A session whose connection broke is
closed and forgotten, so the next request opens a fresh one: that is how a dropped
connection is re-established under the core's retry rules. After ``fork`` the child
starts with an empty pool (the parent's sockets and transport threads are not its own).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from desync_store_sftp.connect import Session


class SessionPool:
    """Up to ``size`` sessions made by ``opener``."""

    def __init__(self, opener: Callable[[], Session], size: int) -> None:
        self.opener = opener
        self.size = max(1, size)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._idle: list[Session] = []
        self._count = 0  # sessions open or being opened
        #: bumped by close(): sessions of an older generation are closed when released
        self._generation = 0

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            # Drop (never close: the parent still uses them) the inherited sessions.
            self._reset()

    def _acquire(self) -> tuple[Session, int]:
        self._check_fork()
        dead: list[Session] = []
        try:
            with self._cond:
                while True:
                    while self._idle:
                        session = self._idle.pop()
                        if session.alive():
                            return session, self._generation
                        # The server went away while it was idle (restart, cut): after
                        # a restart every idle session is dead, and each one tried
                        # would cost the caller a retry attempt.
                        dead.append(session)
                        self._count -= 1
                    if self._count < self.size:
                        self._count += 1
                        generation = self._generation
                        break
                    self._cond.wait()
        finally:
            for session in dead:
                session.close()
        try:
            return self.opener(), generation
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, session: Session, generation: int, broken: bool) -> None:
        if self._pid != os.getpid():
            return  # a forked child's copy of a parent's session: leave it alone
        with self._cond:
            if broken or generation != self._generation:
                self._count -= 1
                self._cond.notify()
            else:
                self._idle.append(session)
                self._cond.notify()
                return
        session.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for one operation. If the block raises and the connection is no
        longer alive (or the error was not an SFTP status), the session is discarded."""
        session, generation = self._acquire()
        try:
            yield session
        except (FileNotFoundError, PermissionError, FileExistsError):
            self._release(session, generation, broken=False)  # an SFTP status answer
            raise
        except OSError as exc:
            # A timeout leaves an answer pending; other OS errors may be the link.
            if isinstance(exc, (TimeoutError, ConnectionError)):
                self._release(session, generation, broken=True)
                raise
            if session.alive():
                self._release(session, generation, broken=False)  # e.g. SFTP "Failure"
                raise
            self._release(session, generation, broken=True)
            # paramiko says "Socket is closed" with a plain OSError: name it a link error
            # so that it is retried.
            raise ConnectionError(f"connection lost: {exc.strerror or exc}") from exc
        except BaseException:
            # A protocol error, EOF, KeyboardInterrupt mid-request: the session's
            # request/answer state is unknown, so it is not reused.
            self._release(session, generation, broken=True)
            raise
        self._release(session, generation, broken=False)

    def close(self) -> None:
        """Close the idle sessions; busy ones are closed when they are released. The
        pool stays usable (new sessions are opened on demand)."""
        self._check_fork()
        with self._cond:
            self._generation += 1
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for session in idle:
            session.close()


__all__ = ["SessionPool"]
