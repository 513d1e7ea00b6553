"""Whole-file SFTP reads and atomic writes in as few round trips as the protocol allows.

paramiko's file object reads 8 KiB per request when asked for "everything" and ignores
a failed CLOSE; a 64 KiB chunk would cost ten round trips and a write error at close
could go unnoticed. These functions pipeline requests on paramiko's SFTP client:

* read: OPEN, then FSTAT + READ (one round trip, up to :data:`READ_SIZE` bytes; more
  READs only for larger files or servers that answer short), CLOSE without waiting;
* write: OPEN the temporary name (``O_EXCL``), every WRITE and the CLOSE at once, wait
  for all of their statuses, then ``posix-rename@openssh.com`` onto the final name —
  the rename is sent only when every byte is known to be written, so the final name
  never holds a partial file.

They use the client's request layer (``_async_request``/``_read_response``), which has
been stable across paramiko releases; answers are matched by request id, so servers
that answer out of order are fine.
"""

from __future__ import annotations

import errno
from typing import Any

import paramiko  # type: ignore[import-untyped]
from paramiko.message import Message  # type: ignore[import-untyped]
from paramiko.sftp import (  # type: ignore[import-untyped]
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
    try:
        n_stat = _send(sftp, replies, CMD_FSTAT, handle)
        n_read = _send(sftp, replies, CMD_READ, handle, int64(0), READ_SIZE)
        t, msg = _wait(sftp, replies, n_stat)
        size = paramiko.SFTPAttributes._from_msg(msg).st_size if t == CMD_ATTRS else None
        parts: list[bytes] = []
        offset = 0
        while True:
            t, msg = _wait(sftp, replies, n_read)
            if t == CMD_DATA:
                data = msg.get_string()
                parts.append(data)
                offset += len(data)
                if not data or (size is not None and offset >= size):
                    break
            elif t == CMD_STATUS:
                code = msg.get_int()
                if code == SFTP_EOF:
                    break
                raise _status_error(code, msg, path)
            else:
                raise paramiko.SFTPError(f"unexpected SFTP reply {t} reading {path}")
            n_read = _send(sftp, replies, CMD_READ, handle, int64(offset), READ_SIZE)
        return b"".join(parts)
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
        pending: list[int] = []
        for offset in range(0, len(view), WRITE_SIZE):
            if len(pending) >= _MAX_IN_FLIGHT:
                _expect_ok(*_wait(sftp, replies, pending.pop(0)), tmp)
            pending.append(_send(sftp, replies, CMD_WRITE, handle, int64(offset),
                                 bytes(view[offset:offset + WRITE_SIZE])))
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


__all__ = ["READ_SIZE", "WRITE_SIZE", "read_file", "write_file"]
