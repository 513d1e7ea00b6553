"""Whole-file SFTP reads and atomic writes in as few round trips as the protocol allows.

paramiko's file object reads 8 KiB per request when asked for "everything" and ignores
a failed CLOSE; a 64 KiB chunk would cost ten round trips and a write error at close
could go unnoticed. These functions pipeline requests on paramiko's SFTP client:

* read: OPEN, then FSTAT + READ + CLOSE in one channel write (one round trip, up to
  :data:`READ_SIZE` bytes; a second handle only for larger files or servers that
  answer short); nobody waits for the CLOSE's answer;
* write: OPEN the temporary name (``O_EXCL``), the WRITEs and the CLOSE in a few channel
  writes, wait for all of their statuses, then ``posix-rename@openssh.com`` onto the
  final name —
  the rename is sent only when every byte is known to be written, so the final name
  never holds a partial file.

They use the client's request layer (``_async_request``/``_read_response``), which has
been stable across paramiko releases; answers are matched by request id, so servers
that answer out of order are fine.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_PERMISSION_DENIED,
    int64,
)

#: Bytes asked for per READ: OpenSSH's sftp-server answers up to 255 KiB (its message
#: limit is 256 KiB), others answer less, which is handled.
READ_SIZE = 255 * 1024
#: Bytes per WRITE: 32 KiB is what every SFTP server must accept.
WRITE_SIZE = 32 * 1024
#: Writes in flight at once (bounds memory; the channel window bounds the rest).
_MAX_IN_FLIGHT = 64
#: WRITE requests sent together in one channel write.
_WRITES_PER_SEND = 8


class BatchingSFTPClient(paramiko.SFTPClient):
    """An SFTP client that can send several requests in one channel write.

    Inside :meth:`batch` the requests' bytes are collected and sent together when the
    block ends: one SSH packet and one system call instead of one per request (the
    client is CPU-bound on paramiko's per-packet work, not on the network). Only one
    thread may use a client at a time (the store's pool guarantees that).
    """

    _pending: list[bytes] | None = None

    def _write_all(self, out: bytes) -> None:
        if self._pending is not None:
            self._pending.append(out)
        else:
            super()._write_all(out)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the requests made in the block; send them when it ends."""
        self._pending = []
        try:
            yield
        finally:
            out, self._pending = b"".join(self._pending), None
            if out:
                super()._write_all(out)


def batched(sftp: paramiko.SFTPClient) -> AbstractContextManager[None]:
    """``sftp.batch()`` for a :class:`BatchingSFTPClient`, else nothing special."""
    return sftp.batch() if isinstance(sftp, BatchingSFTPClient) else nullcontext()


class _Replies:
    """Collects the answers to pipelined requests by request id."""

    def __init__(self) -> None:
        self.answers: dict[int, tuple[int, Message]] = {}

    def _async_response(self, t: int, msg: Message, num: int) -> None:  # paramiko calls this
        self.answers[num] = (t, msg)


def _send(sftp: paramiko.SFTPClient, replies: _Replies, t: int, *args: Any) -> int:
    return int(sftp._async_request(replies, t, *args))


def _wait(sftp: paramiko.SFTPClient, replies: _Replies, num: int) -> tuple[int, Message]:
    while num not in replies.answers:
        sftp._read_response()  # one packet, dispatched to whoever asked for it
    return replies.answers.pop(num)


def _status_error(code: int, msg: Message, path: str) -> OSError:
    """The OSError for a failed STATUS reply (``msg`` positioned after the code)."""
    text = msg.get_text()
    if code == SFTP_NO_SUCH_FILE:
        return FileNotFoundError(errno.ENOENT, text or "No such file", path)
    if code == SFTP_PERMISSION_DENIED:
        return PermissionError(errno.EACCES, text or "Permission denied", path)
    return OSError(None, f"{path}: {text or f'SFTP status {code}'}")


def _expect_ok(t: int, msg: Message, path: str) -> None:
    if t != CMD_STATUS:
        raise paramiko.SFTPError(f"unexpected SFTP reply {t} for {path}")
    code = msg.get_int()
    if code != SFTP_OK:
        raise _status_error(code, msg, path)


def _open(sftp: paramiko.SFTPClient, path: str, flags: int) -> bytes:
    replies = _Replies()
    num = _send(sftp, replies, CMD_OPEN, path, flags, paramiko.SFTPAttributes())
    t, msg = _wait(sftp, replies, num)
    if t == CMD_STATUS:
        raise _status_error(msg.get_int(), msg, path)
    if t != CMD_HANDLE:
        raise paramiko.SFTPError(f"unexpected SFTP reply {t} to open {path}")
    return bytes(msg.get_binary())


def _close_quietly(sftp: paramiko.SFTPClient, handle: bytes) -> None:
    """Send CLOSE without waiting: paramiko drops the answer when it arrives. A broken
    connection must not hide the error that is being raised."""
    try:
        sftp._async_request(type(None), CMD_CLOSE, handle)
    except Exception:  # the caller's error (or result) matters
        pass


def read_file(sftp: paramiko.SFTPClient, path: str) -> bytes:
    """The whole content of ``path``; FileNotFoundError if it does not exist."""
    handle = _open(sftp, path, SFTP_FLAG_READ)
    replies = _Replies()
    with batched(sftp):
        n_stat = _send(sftp, replies, CMD_FSTAT, handle)
        n_read = _send(sftp, replies, CMD_READ, handle, int64(0), READ_SIZE)
        # Requests on one handle are processed in order: the READ is answered first.
        _close_quietly(sftp, handle)
    t, msg = _wait(sftp, replies, n_stat)
    size = paramiko.SFTPAttributes._from_msg(msg).st_size if t == CMD_ATTRS else None
    data, eof = _data_reply(*_wait(sftp, replies, n_read), path)
    if eof or (size is not None and len(data) >= size):
        return data
    # A file larger than one READ, or a server that answers short: read on from there.
    return data + _read_from(sftp, path, len(data))


def read_files(sftp: paramiko.SFTPClient, paths: list[str]) -> list[bytes | None]:
    """The contents of several files (None for a missing one), in two round trips:
    every OPEN in one write, then every FSTAT + READ + CLOSE in another. Other errors
    are raised after every handle was closed."""
    replies = _Replies()
    flags = SFTP_FLAG_READ
    with batched(sftp):
        opens = [_send(sftp, replies, CMD_OPEN, p, flags, paramiko.SFTPAttributes())
                 for p in paths]
    handles: list[bytes | None] = []
    error: OSError | None = None
    for path, num in zip(paths, opens, strict=True):
        t, msg = _wait(sftp, replies, num)
        if t == CMD_HANDLE:
            handles.append(bytes(msg.get_binary()))
            continue
        handles.append(None)
        if t != CMD_STATUS:
            error = error or OSError(None, f"unexpected SFTP reply {t} to open {path}")
            continue
        code = msg.get_int()
        if code != SFTP_NO_SUCH_FILE:
            error = error or _status_error(code, msg, path)
    with batched(sftp):
        requests: list[tuple[int, int] | None] = []
        for handle in handles:
            if handle is None:
                requests.append(None)
                continue
            if error is None:
                requests.append((_send(sftp, replies, CMD_FSTAT, handle),
                                 _send(sftp, replies, CMD_READ, handle, int64(0), READ_SIZE)))
            _close_quietly(sftp, handle)
    if error is not None:
        raise error
    out: list[bytes | None] = []
    for path, request in zip(paths, requests, strict=True):
        if request is None:
            out.append(None)
            continue
        t, msg = _wait(sftp, replies, request[0])
        size = paramiko.SFTPAttributes._from_msg(msg).st_size if t == CMD_ATTRS else None
        data, eof = _data_reply(*_wait(sftp, replies, request[1]), path)
        if not eof and (size is None or len(data) < size):
            data += _read_from(sftp, path, len(data))
        out.append(data)
    return out


def _data_reply(t: int, msg: Message, path: str) -> tuple[bytes, bool]:
    """(data, at end of file) of a READ's answer."""
    if t == CMD_DATA:
        data = msg.get_string()
        return data, not data
    if t == CMD_STATUS:
        code = msg.get_int()
        if code == SFTP_EOF:
            return b"", True
        raise _status_error(code, msg, path)
    raise paramiko.SFTPError(f"unexpected SFTP reply {t} reading {path}")


def _read_from(sftp: paramiko.SFTPClient, path: str, offset: int) -> bytes:
    """The content of ``path`` from ``offset`` to its end (a new handle)."""
    handle = _open(sftp, path, SFTP_FLAG_READ)
    replies = _Replies()
    parts: list[bytes] = []
    try:
        while True:
            num = _send(sftp, replies, CMD_READ, handle, int64(offset), READ_SIZE)
            data, eof = _data_reply(*_wait(sftp, replies, num), path)
            if eof:
                return b"".join(parts)
            parts.append(data)
            offset += len(data)
    finally:
        _close_quietly(sftp, handle)


def write_file(sftp: paramiko.SFTPClient, tmp: str, final: str,
               data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``tmp`` (created exclusively), then rename it onto ``final``.

    Raises FileNotFoundError if ``tmp``'s directory does not exist (nothing is
    written then). On any failure after creating ``tmp`` it is removed.
    """
    handle = _open(sftp, tmp, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL | SFTP_FLAG_TRUNC)
    replies = _Replies()
    closed = False
    try:
        view = memoryview(data).cast("B")
        offsets = list(range(0, len(view), WRITE_SIZE))
        groups = [offsets[i:i + _WRITES_PER_SEND] for i in
                  range(0, len(offsets), _WRITES_PER_SEND)] or [[]]
        pending: list[int] = []
        n_close = 0
        for number, group in enumerate(groups):
            while len(pending) >= _MAX_IN_FLIGHT:
                _expect_ok(*_wait(sftp, replies, pending.pop(0)), tmp)
            with batched(sftp):
                for offset in group:
                    pending.append(_send(sftp, replies, CMD_WRITE, handle, int64(offset),
                                         bytes(view[offset:offset + WRITE_SIZE])))
                if number == len(groups) - 1:
                    n_close = _send(sftp, replies, CMD_CLOSE, handle)
                    closed = True
        for num in pending:
            _expect_ok(*_wait(sftp, replies, num), tmp)
        _expect_ok(*_wait(sftp, replies, n_close), tmp)
        num = _send(sftp, replies, CMD_EXTENDED, "posix-rename@openssh.com", tmp, final)
        _expect_ok(*_wait(sftp, replies, num), final)
    except BaseException:
        if not closed:
            _close_quietly(sftp, handle)
        try:
            sftp.remove(tmp)
        except Exception:  # best effort; the original error matters
            pass
        raise


__all__ = ["READ_SIZE", "WRITE_SIZE", "BatchingSFTPClient", "batched", "read_file",
           "read_files", "write_file"]
