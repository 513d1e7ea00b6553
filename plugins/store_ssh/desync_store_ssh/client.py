"""``ssh://[user@]host[:port]/path``: a read-only chunk store over the casync protocol.

Each session is one ``$CASYNC_SSH_PATH [-p PORT] -- [user@]host "$CASYNC_REMOTE_PATH
pull - - - '<path>'"`` child (``remote.md`` §4.1) speaking the protocol on its stdin and
stdout. The store keeps a pool of up to ``-n`` sessions, started when first needed (in
parallel, by the threads that need them) and ended with GOODBYE on :meth:`close`.

A session is used by one thread at a time. :meth:`get_chunks` pipelines many requests
on it: several ids per REQUEST when the remote is casync (which answers every id of a
REQUEST), one REQUEST per id otherwise (desync's Go server answers only the first id of
a REQUEST, and its HELLO cannot be told from ours or casync's). Answers are matched by
id, not by position (casync may reorder them). casync's server answers each id only
once per session and silently ignores a second request for it (its queue remembers
every id it dispatched): for casync, a session is never asked for an id twice — another
session is used, or a fresh one started.

Every wait is bounded by the store's ``timeout`` option. What the peer sends is checked
(sizes, flags, unrequested ids, 16 MiB limit); errors name the store:

* the session died, or ssh could not connect (exit 255): :class:`StoreConnectionError`,
  retried by the core with a fresh session;
* no answer in time: :class:`StoreTimeoutError`;
* the remote is not casync/desync (garbage, a HELLO offering no chunks, a command that
  exits), ABORT, malformed or oversized messages: :class:`StoreError` (not retried).

ssh's stderr is kept in a temporary file per session; its last line explains failures.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO
from urllib.parse import unquote

from desync_core.plugin_api import (
    COMPRESSED,
    Chunk,
    ChunkMissingError,
    ChunkStore,
    ConfigError,
    StoreConnectionError,
    StoreError,
    StoreLocation,
    StoreOptions,
    StoreTimeoutError,
    UsageError,
)
from desync_store_ssh import protocol as p

#: ids per REQUEST (casync) and requests in flight per session in :meth:`get_chunks`.
BATCH = 64
#: A casync session is retired after this many ids: it must remember them (casync's
#: server ignores a second request for an id), and so does casync's server, on disk.
CASYNC_SESSION_IDS = 1 << 20
#: How long a closing session may take to exit after GOODBYE before it is killed.
CLOSE_GRACE = 2.0


def shell_quote(text: str) -> str:
    """Single-quote for a POSIX shell (``'`` → ``'\\''``), as desync does."""
    return "'" + text.replace("'", "'\\''") + "'"


def parse_ssh_location(location: StoreLocation) -> tuple[str, int | None, str]:
    """``(destination, port, path)`` of ``ssh://[user@]host[:port]/path``.

    The host keeps its case (it may be an alias of ``~/.ssh/config``); user and path
    are percent-decoded like Go's ``url.URL``.

    Raises:
        UsageError: no host, no path, or a destination ssh would read as an option.
    """
    parts = location.url
    netloc = parts.netloc
    user, _, hostport = netloc.rpartition("@")
    host = hostport
    port = parts.port
    if port is not None:
        host = hostport.rsplit(":", 1)[0]
    elif hostport.endswith(":"):
        host = hostport[:-1]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise UsageError(f"invalid ssh store location {location.raw!r}: no host")
    path = unquote(parts.path)
    if not path or path == "/":
        raise UsageError(f"invalid ssh store location {location.raw!r}: no store path")
    destination = f"{unquote(user)}@{host}" if user else host
    if destination.startswith("-"):
        raise UsageError(f"invalid ssh destination {destination!r}: must not begin with '-'")
    return destination, port, path


class Session:
    """One ssh child speaking the protocol; used by one thread at a time.

    Args:
        argv: the ssh command line.
        store: the store's name for messages.
        timeout: the longest wait for any message (``None``: no limit).
    """

    def __init__(self, argv: list[str], store: str, timeout: float | None) -> None:
        self.store = store
        self.timeout = timeout
        self.argv = argv
        # closed in finish(); ssh writes its messages there, read back on errors
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="desync-ssh-")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, bufsize=0)
        except OSError as exc:
            self._stderr.close()
            raise StoreError(f"store {store}: cannot run {argv[0]!r}: "
                             f"{exc.strerror or exc}") from None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self.reader = p.MessageReader(self._out)
        self.broken = False
        #: ids already requested on this session, when the peer is casync (its server
        #: answers each id once per session and ignores later requests for it)
        self.asked: set[bytes] | None = None

    # -- start and end -----------------------------------------------------------------

    def handshake(self) -> None:
        """Exchange HELLOs; the server must offer a readable store."""
        self._send([p.hello(p.PULL_CHUNKS)])
        msg_type, body = self._receive(first=True)
        if msg_type != p.HELLO:
            raise self._not_casync(f"it sent {p.type_name(msg_type)} instead of HELLO")
        try:
            flags = p.parse_hello(body)
        except p.ProtocolError as exc:
            raise self._not_casync(str(exc)) from None
        if not flags & p.READABLE_STORE:
            raise self._not_casync(f"server not offering chunks (HELLO flags "
                                   f"{p.flag_names(flags)})")
        if p.unmet_needs(flags, p.READABLE_STORE):
            raise self._not_casync(f"the server wants operations we do not offer (HELLO "
                                   f"flags {p.flag_names(flags)})")

    def say_goodbye(self) -> None:
        """Send GOODBYE (if the session is healthy); the server then exits."""
        if not self.broken:
            try:
                p.write_all(self._in, [p.goodbye()], time.monotonic() + 1)
            except (p.ProtocolError, OSError):
                self.broken = True

    def close(self) -> None:
        """GOODBYE, then wait briefly for the child."""
        self.say_goodbye()
        self.finish()

    def finish(self, grace: float = CLOSE_GRACE) -> None:
        """Close our ends and reap the child (killed if it lingers)."""
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()

    def kill(self) -> None:
        """End a broken session at once."""
        self.broken = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish(grace=5)

    # -- requests ----------------------------------------------------------------------

    def fetch(self, chunk_ids: list[bytes], batch: bool) -> dict[bytes, Chunk | None]:
        """Request distinct ``chunk_ids`` (pipelined); every answer by id: a Chunk, or
        None for MISSING."""
        if batch:
            parts = [p.request(chunk_ids[i : i + BATCH]) for i in range(0, len(chunk_ids), BATCH)]
        else:
            parts = [p.request([cid]) for cid in chunk_ids]
        if self.asked is not None:
            self.asked.update(chunk_ids)
        self._send(parts)
        wanted = set(chunk_ids)
        answers: dict[bytes, Chunk | None] = {}
        while len(answers) < len(wanted):
            got, answer = self._answer()
            if got not in wanted or got in answers:
                raise self._protocol(f"answer for chunk {got.hex()}, which was not "
                                     "requested")
            answers[got] = answer
        return answers

    def _answer(self) -> tuple[bytes, Chunk | None]:
        msg_type, body = self._receive()
        try:
            if msg_type == p.CHUNK:
                flags, chunk_id, data = p.parse_chunk(body)
                if flags & p.CHUNK_COMPRESSED:
                    return chunk_id, Chunk(chunk_id, encoded=data, codec=COMPRESSED)
                return chunk_id, Chunk(chunk_id, data)
            if msg_type == p.MISSING:
                return p.parse_missing(body), None
        except p.ProtocolError as exc:
            raise self._protocol(str(exc)) from None
        if msg_type == p.ABORT:
            error, reason = p.parse_abort(body)
            self.broken = True
            detail = f" ({os.strerror(error)})" if 0 < error < 200 else ""
            raise StoreError(f"store {self.store}: the server aborted the session: "
                             f"{reason}{detail}")
        if msg_type == p.GOODBYE:
            self.broken = True
            raise StoreConnectionError(f"store {self.store}: the server ended the session "
                                       "(GOODBYE) with requests pending")
        raise self._protocol(f"unexpected {p.type_name(msg_type)} message")

    # -- plumbing ----------------------------------------------------------------------

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _send(self, parts: list[bytes]) -> None:
        try:
            p.write_all(self._in, parts, self._deadline())
        except p.PeerTimeoutError:
            self.broken = True
            raise StoreTimeoutError(f"store {self.store}: the ssh session does not read "
                                    f"requests (timeout {self.timeout:g} s)") from None
        except (p.PeerClosedError, OSError):
            raise self._ended() from None

    def _receive(self, first: bool = False) -> tuple[int, bytearray]:
        try:
            return self.reader.read(self.timeout)
        except p.PeerTimeoutError:
            self.broken = True
            what = "HELLO" if first else "answer"
            raise StoreTimeoutError(f"store {self.store}: no {what} from "
                                    f"{self._remote()} within {self.timeout:g} s") from None
        except p.PeerClosedError as exc:
            if first and exc.partial:
                raise self._not_casync(f"it sent {exc.received[:64]!r} and closed the "
                                       "connection") from None
            raise self._ended(first=first, detail=str(exc) if exc.partial else "") from None
        except p.ProtocolError as exc:
            if first:
                raise self._not_casync(str(exc)) from None
            raise self._protocol(str(exc)) from None

    def _remote(self) -> str:
        return repr(self.argv[-1])

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln.strip() for ln in self._stderr.read()[-4096:].decode(
                "utf-8", "replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return f": {lines[-1]}" if lines else ""

    def _exit_status(self) -> int | None:
        try:
            return self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return None

    def _ended(self, first: bool = False, detail: str = "") -> StoreError:
        """The child closed its stdout: an error with its exit status and stderr."""
        self.broken = True
        status = self._exit_status()
        code = "" if status is None else f" (exit status {status})"
        if first:
            # ssh exits 255 when it cannot connect or authenticate: maybe transient.
            # Anything else means the remote command ran and was not a casync server.
            cls = StoreConnectionError if status in (255, None) else StoreError
            what = ("could not start the session" if cls is StoreConnectionError else
                    f"the remote command {self._remote()} is not a casync server")
            return cls(f"store {self.store}: {what}: it ended before the casync "
                       f"handshake{code}{self._stderr_tail()}")
        detail = f": {detail}" if detail else ""
        # 255: ssh lost the connection or the remote was killed (transient, retried);
        # another status: the server quit by itself (casync does on a corrupt chunk)
        cls = StoreConnectionError if status in (255, None) else StoreError
        return cls(f"store {self.store}: the ssh session ended{code}"
                                    f"{detail}{self._stderr_tail()}")

    def _not_casync(self, why: str) -> StoreError:
        self.broken = True
        return StoreError(f"store {self.store}: the remote command {self._remote()} is not "
                          f"a casync server: {why}{self._stderr_tail()}")

    def _protocol(self, why: str) -> StoreError:
        self.broken = True
        return StoreError(f"store {self.store}: casync protocol error: {why}")


class SSHChunkStore(ChunkStore):
    """A read-only chunk store served by a remote ``casync pull`` or ``desync pull``.

    Args:
        location: ``ssh://[user@]host[:port]/path``.
        options: ``n`` sessions at most, ``timeout`` for every wait. Encryption settings
            are refused (desync's words): the protocol carries casync chunks only.
    """

    returns_stored_bytes = True  # casync and desync servers send compressed chunks

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        opts = options or StoreOptions()
        if opts.encryption or opts.encryption_key or opts.encryption_algorithm:
            raise ConfigError(f"store options for {location.raw!r}: encryption is not "
                              "supported by casync protocol (ssh://) stores")
        super().__init__(location, opts)
        self.codec = COMPRESSED  # the wire format, whatever ``uncompressed`` says
        self.destination, self.port, self.path = parse_ssh_location(location)
        self.size = max(1, opts.n)
        self._lock = threading.Condition()
        self._idle: list[Session] = []
        self._count = 0
        #: close() ends the sessions of this generation; the store stays usable.
        self._generation = 0

    # -- sessions ----------------------------------------------------------------------

    def command(self) -> list[str]:
        """The ssh command line of one session (environment read now, as desync does)."""
        ssh = os.environ.get("CASYNC_SSH_PATH") or "ssh"
        remote = os.environ.get("CASYNC_REMOTE_PATH") or "casync"
        port = ["-p", str(self.port)] if self.port is not None else []
        return [ssh, *port, "--", self.destination,
                f"{remote} pull - - - {shell_quote(self.path)}"]

    def peer_is_casync(self) -> bool:
        """Whether the remote command is casync: its server answers every id of a
        REQUEST, but each id only once per session."""
        remote = os.environ.get("CASYNC_REMOTE_PATH") or "casync"
        try:
            words = shlex.split(remote)
        except ValueError:
            return False
        return bool(words) and os.path.basename(words[0]) == "casync"

    def _acquire(self, chunk_ids: list[bytes], casync: bool) -> tuple[Session, int]:
        """An idle session (for casync: one that was never asked for these ids), or a
        new one when fewer than ``n`` exist (a casync session that has seen the ids, or
        too many, is retired to make room)."""
        retired: Session | None = None
        with self._lock:
            generation = self._generation
            while True:
                for k in range(len(self._idle) - 1, -1, -1):
                    asked = self._idle[k].asked
                    if asked is None or asked.isdisjoint(chunk_ids):
                        return self._idle.pop(k), generation
                if self._count < self.size:
                    self._count += 1
                    break
                if self._idle:  # every idle session answered one of these ids already
                    retired = self._idle.pop(0)
                    break
                self._lock.wait()
        if retired is not None:
            retired.close()
        try:  # start a session outside the lock: several start in parallel
            session = Session(self.command(), str(self), self.options.timeout)
            try:
                session.handshake()
            except BaseException:
                session.kill()
                raise
        except BaseException:
            with self._lock:
                self._count -= 1
                self._lock.notify()
            raise
        if casync:
            session.asked = set()
        return session, generation

    def _release(self, session: Session, generation: int) -> None:
        with self._lock:
            keep = (not session.broken and generation == self._generation
                    and (session.asked is None or len(session.asked) < CASYNC_SESSION_IDS))
            if keep:
                self._idle.append(session)
            else:
                self._count -= 1
            self._lock.notify()
        if not keep:
            if session.broken:
                session.kill()
            else:
                session.close()

    def _fetch(self, chunk_ids: list[bytes]) -> dict[bytes, Chunk | None]:
        casync = self.peer_is_casync()
        session, generation = self._acquire(chunk_ids, casync)
        try:
            return session.fetch(chunk_ids, casync)
        except BaseException:
            session.broken = True  # answers may still be on the way: never reuse it
            raise
        finally:
            self._release(session, generation)

    # -- ChunkStore --------------------------------------------------------------------

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        """Request one chunk (compressed on the wire; verified by the core)."""
        chunk = self._fetch([chunk_id])[chunk_id]
        if chunk is None:
            raise ChunkMissingError(chunk_id, self)
        return chunk

    def has_chunk(self, chunk_id: bytes) -> bool:
        """The protocol has no "exists" query: the chunk is requested."""
        return self._fetch([chunk_id])[chunk_id] is not None

    def get_chunks(self, chunk_ids: Iterable[bytes]) -> Iterator[tuple[bytes, Chunk | None]]:
        """Many chunks over one session, up to :data:`BATCH` requests in flight."""
        ids = list(chunk_ids)
        for start in range(0, len(ids), BATCH):
            group = ids[start : start + BATCH]
            answers = self._fetch(list(dict.fromkeys(group)))
            for chunk_id in group:
                yield chunk_id, answers[chunk_id]

    def close(self) -> None:
        """GOODBYE to every idle session (busy ones end when released); the store
        stays usable and starts new sessions when needed."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._lock.notify_all()
        for session in idle:  # GOODBYE to all first, then wait: they exit in parallel
            session.say_goodbye()
        for session in idle:
            session.finish()
