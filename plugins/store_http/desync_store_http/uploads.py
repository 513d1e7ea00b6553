"""Request bodies and the memory they may hold, under
:class:`~desync_store_http.handler.RequestHandler`.

* :class:`UploadGate` bounds the memory and number of uploads handled at once (one per
  server, in :class:`~desync_store_http.settings.ServerSettings`);
* :class:`BodyReader` reads bodies (``Content-Length`` or chunked, with a size limit)
  and receives uploads within that budget (:class:`Upload`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from desync_store_http.replies import ReplyWriter

#: Memory all uploads being received, checked and stored may hold at once (bodies and
#: any decoded copy). An upload waits for room, at most UPLOAD_QUEUE_TIMEOUT, then 503.
UPLOAD_MEMORY_BUDGET = 256 * 1024 * 1024
#: Uploads handled at the same time, whatever their size (others queue, as above).
MAX_CONCURRENT_UPLOADS = 16
#: How long an upload waits for room in the budget before the server answers 503.
UPLOAD_QUEUE_TIMEOUT = 30.0


class UploadGate:
    """Bounds the memory and number of uploads handled at once (a byte semaphore).

    A request reserves the bytes it will hold (its body, later any decoded copy) and
    waits while they do not fit; a reservation larger than the whole budget waits for
    the budget to be empty and then runs alone, so every valid upload gets through.

    Args:
        budget: bytes all reservations may add up to.
        slots: reservations (uploads) at the same time.
        wait: seconds a reservation waits for room before giving up.
    """

    def __init__(self, budget: int = UPLOAD_MEMORY_BUDGET, slots: int = MAX_CONCURRENT_UPLOADS,
                 wait: float = UPLOAD_QUEUE_TIMEOUT) -> None:
        self.budget = budget
        self.slots = slots
        self.wait = wait
        self._cond = threading.Condition()
        self.in_use = 0
        self.active = 0

    def _fits(self, nbytes: int, new_slot: bool) -> bool:
        if new_slot and self.active >= self.slots:
            return False
        return self.in_use + min(nbytes, self.budget) <= self.budget

    def acquire(self, nbytes: int, *, new_slot: bool = True) -> bool:
        """Reserve ``nbytes`` (and a slot); False if no room came within ``wait``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._fits(nbytes, new_slot), self.wait):
                return False
            self.in_use += min(nbytes, self.budget)
            self.active += new_slot
            return True

    def release(self, nbytes: int, *, slot: bool = True) -> None:
        """Give back a reservation made with :meth:`acquire`."""
        with self._cond:
            self.in_use -= min(nbytes, self.budget)
            self.active -= slot
            self._cond.notify_all()


class Upload:
    """The body of one upload and its reservation in the :class:`UploadGate`."""

    def __init__(self, handler: BodyReader, gate: UploadGate, reserved: int) -> None:
        self.handler = handler
        self.gate = gate
        self.reserved = reserved
        self.extra = 0
        self.body = b""

    def reserve_more(self, nbytes: int) -> None:
        """Reserve ``nbytes`` more (a decoded copy about to be made).

        Raises:
            BodyError: no room in time (503 sent).
        """
        if not self.gate.acquire(nbytes, new_slot=False):
            self.handler.reply_busy()
            raise BodyError
        self.extra += nbytes

    def release(self) -> None:
        """Give the reservation back."""
        self.gate.release(self.extra, slot=False)
        self.gate.release(self.reserved)
        self.extra = self.reserved = 0


class BodyError(Exception):
    """A request body could not be read; the reply has been sent already."""


class BodyReader(ReplyWriter):
    """Request bodies of a request handler (see
    :class:`~desync_store_http.handler.RequestHandler`)."""

    @contextlib.contextmanager
    def upload(self, limit: int) -> Iterator[Upload]:
        """Receive an upload body of at most ``limit`` bytes within the upload budget.

        Content-Encoding other than identity is refused (415): stores hold chunks in
        their own encoding, and a gzip or xz body could inflate without bound. The body
        is read only once its bytes are reserved in :attr:`ServerSettings.uploads`
        (``413`` beyond ``limit``, ``503`` when the budget stays full); the reservation
        lasts until the block ends.

        Raises:
            BodyError: refused (the reply is sent).
        """
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            self.reply(415, f"unsupported Content-Encoding {encoding!r}: send the chunk "
                       "as the store encodes it\n".encode())
            raise BodyError
        raw_length = self.headers.get("Content-Length")
        chunked = bool(self.headers.get("Transfer-Encoding", "").strip())
        need = limit
        if not chunked and raw_length is not None and raw_length.strip().isdigit():
            need = int(raw_length.strip())
            if need > limit:
                raise self._too_large(limit)
        gate = self.settings.uploads
        if not gate.acquire(need):
            self.reply_busy()
            raise BodyError
        upload = Upload(self, gate, need)
        try:
            upload.body = self.read_body(limit)
            yield upload
        finally:
            upload.release()

    def read_body(self, limit: int) -> bytes:
        """The request body (``Content-Length`` or chunked), at most ``limit`` bytes.

        Raises:
            BodyError: the body is missing, malformed or too large (already answered).
            ConnectionError: the client went away in the middle.
        """
        te = self.headers.get("Transfer-Encoding", "").strip().lower()
        if te:
            if te != "chunked":
                self.reply(501, f"unsupported transfer encoding {te!r}\n".encode())
                raise BodyError
            data = self._read_chunked(limit)
        else:
            raw = self.headers.get("Content-Length")
            if raw is None:
                self.reply(411, b"Content-Length required\n")
                raise BodyError
            if not raw.strip().isdigit():
                self.reply(400, b"invalid Content-Length\n")
                raise BodyError
            length = int(raw.strip())
            if length > limit:
                raise self._too_large(limit)
            data = self._read_exactly(length)
        self._body_read = True
        if self.settings.metrics is not None:
            self.settings.metrics.received(len(data))
        return data

    def _too_large(self, limit: int) -> BodyError:
        """Answer 413 for a body over ``limit`` bytes; the error to raise."""
        self.reply(413, f"request body too large (limit {limit} bytes)\n".encode())
        return BodyError()

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise ConnectionError("client closed the connection during the body")
        return data

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                size = -1
            if size < 0 or not size_text.isalnum():
                self.reply(400, b"malformed chunked body\n")
                raise BodyError
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are ignored
                return b"".join(parts)
            total += size
            if total > limit:
                raise self._too_large(limit)
            parts.append(self._read_exactly(size))
            self.rfile.readline(16)


__all__ = [
    "MAX_CONCURRENT_UPLOADS",
    "UPLOAD_MEMORY_BUDGET",
    "UPLOAD_QUEUE_TIMEOUT",
    "BodyError",
    "BodyReader",
    "Upload",
    "UploadGate",
]
