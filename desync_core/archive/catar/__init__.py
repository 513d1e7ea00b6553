"""The catar archive format (``catar.md``): encoder, validating decoder, GOODBYE tables.

:class:`CatarEncoder` turns a node stream into catar bytes exactly as casync writes
them for the same feature set (element order, casync's XATTR form, mode/time/uid
normalisation, GOODBYE tables with SipHash-2-4 name hashes in BST order).

:class:`CatarDecoder` turns catar bytes back into a node stream and refuses anything
casync would not have written: unknown or misplaced elements, bad sizes, names that
are empty, ``.``, ``..`` or contain ``/``, children out of order or duplicated,
GOODBYE tables that do not describe the directory, inconsistent feature flags,
truncation and trailing data. Every problem is an :class:`ArchiveFormatError` naming
the offset and path; nothing is yielded for the element that failed.
"""

from __future__ import annotations

import io
import os
import secrets
import sys
from collections.abc import Callable, Iterable
from typing import Any, cast

from desync_core.archive.base import (
    ArchiveFormat,
    ArchiveOptions,
    DirEnd,
    Node,
    NodeStream,
)
from desync_core.archive.catar.decoder import CatarDecoder
from desync_core.archive.catar.elements import (
    ACL_DEFAULT,
    ACL_DEFAULT_GROUP,
    ACL_DEFAULT_USER,
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_USER,
    BLOCK_SIZE,
    DEVICE,
    ELEMENT_NAMES,
    ENTRY,
    FCAPS,
    FILENAME,
    GOODBYE,
    GOODBYE_TAIL_MARKER,
    GROUP,
    MAX_FCAPS,
    MAX_NAME,
    MAX_SELINUX,
    MAX_SYMLINK,
    MAX_USER,
    MAX_XATTR,
    PAYLOAD,
    QUOTA_PROJID,
    SELINUX,
    SYMLINK,
    USER,
    XATTR,
    bst_order,
    goodbye_items,
    make_bst,
)
from desync_core.archive.catar.encoder import CatarEncoder
from desync_core.errors import DesyncError

# -- the format ---------------------------------------------------------------------------


def open_input(source: str, *, readinto: bool = False) -> tuple[Callable[..., Any],
                                                                  Callable[[], None]]:
    """``(read, close)`` for a catar path or ``-`` (stdin); with ``readinto``, the
    input's ``readinto(buffer)`` instead of ``read(n)``."""
    if source == "-":
        stdin = cast(io.BufferedReader, sys.stdin.buffer)
        return (stdin.readinto if readinto else stdin.read), lambda: None
    try:
        f = open(source, "rb", buffering=0)  # noqa: SIM115
    except OSError as exc:
        raise DesyncError(f"{source}: {exc.strerror}") from None
    return (f.readinto if readinto else f.read), f.close


class CatarFormat(ArchiveFormat):
    """catar files: read (decode) and write (encode)."""

    name = "catar"
    can_read = True
    can_write = True

    def read(self, source: str, options: ArchiveOptions) -> NodeStream:
        read, close = open_input(source)
        try:
            yield from CatarDecoder(read, name=source).nodes()
        finally:
            close()

    def write(self, nodes: Iterable[Node | DirEnd], target: str,
              options: ArchiveOptions) -> None:
        """Encode with ``options.feature_flags`` to ``target`` (atomically) or ``-``."""
        write_blocks(CatarEncoder(options.feature_flags).encode(nodes), target,
                     opened=lambda st: options.skip.add((st.st_dev, st.st_ino)))


def write_blocks(blocks: Iterable[bytes | bytearray | memoryview], target: str, *,
                 opened: Callable[[os.stat_result], None] | None = None) -> int:
    """Write a stream to ``target`` atomically (temp file + rename), or to stdout.

    Args:
        blocks: the data.
        target: a path, or ``-`` for stdout.
        opened: called with the ``stat`` of the output file once it exists (before the
            first block is requested), so a reader can avoid archiving its own output.
    """
    if target == "-":
        out = sys.stdout.buffer
        if opened is not None:
            try:
                opened(os.fstat(out.fileno()))
            except (OSError, ValueError):
                pass  # not a file
        total = 0
        for block in blocks:
            try:
                out.write(block)
            except OSError as exc:
                raise _write_error("stdout", exc) from None
            total += len(block)
        try:
            out.flush()
        except OSError as exc:
            raise _write_error("stdout", exc) from None
        return total
    directory, base = os.path.split(os.path.abspath(target))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
    except OSError as exc:
        raise DesyncError(f"{target}: {exc.strerror}") from None
    total = 0
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            if opened is not None:
                opened(os.fstat(fd))
            for block in blocks:
                view = memoryview(block)
                try:
                    while view:
                        view = view[f.write(view):]
                except OSError as exc:  # a full disk (ENOSPC), EIO, a quota: one line
                    raise _write_error(target, exc) from None
                total += len(block)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _write_error(target, exc) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return total


def _write_error(target: str, exc: OSError) -> DesyncError:
    return DesyncError(f"writing {target}: {exc.strerror or exc}")



__all__ = [
    "ACL_DEFAULT",
    "ACL_DEFAULT_GROUP",
    "ACL_DEFAULT_USER",
    "ACL_GROUP",
    "ACL_GROUP_OBJ",
    "ACL_USER",
    "BLOCK_SIZE",
    "DEVICE",
    "ELEMENT_NAMES",
    "ENTRY",
    "FCAPS",
    "FILENAME",
    "GOODBYE",
    "GOODBYE_TAIL_MARKER",
    "GROUP",
    "MAX_FCAPS",
    "MAX_NAME",
    "MAX_SELINUX",
    "MAX_SYMLINK",
    "MAX_USER",
    "MAX_XATTR",
    "PAYLOAD",
    "QUOTA_PROJID",
    "SELINUX",
    "SYMLINK",
    "USER",
    "XATTR",
    "CatarDecoder",
    "CatarEncoder",
    "CatarFormat",
    "bst_order",
    "goodbye_items",
    "make_bst",
    "open_input",
    "write_blocks",
]
