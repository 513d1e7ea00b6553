"""The filesystem node model shared by every archive format, and the format interface.

A directory tree travels between formats as a *node stream*: an iterator of
:class:`Node` objects in pre-order (a directory before its children, children in
byte-wise name order when the producer sorts), with :data:`DIR_END` after the last
child of every directory. The first node is the root (name ``b""``, path ``b""``).

Producers: the catar decoder, the directory walker (``disk``), the tar reader of the
``format_tar`` plugin. Consumers: the catar encoder, the safe extractor (``disk``),
the mtree printer, the GNU tar writer. Any producer can feed any consumer, which is
how ``tar``, ``untar`` and ``mtree`` are put together.

Metadata is carried in catar's terms: ``mode`` is a Linux ``st_mode``, ``mtime`` is in
nanoseconds, ``flags`` holds chattr/FAT attributes as catar ``WITH_FLAG_*`` bits, and
extended attributes are split the way casync stores them (generic ``xattrs``, file
capabilities in ``fcaps``, the SELinux label in ``selinux``, POSIX ACLs in ``acl``).
"""

from __future__ import annotations

import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from desync_core import flags as ff
from desync_core.errors import UsageError

#: Feature flags ``desync tar`` writes by default (without the digest bit, which follows
#: ``--digest``): 32-bit uids/gids, nanosecond mtimes, every file type, xattrs
#: (``user.*``/``trusted.*``), POSIX ACLs (which carry the permission bits), SELinux
#: labels and file capabilities, plus exclude-nodump. casync makes the same archive with
#: ``--with=32bit-uids --with=nsec-time --with=symlinks --with=device-nodes --with=fifos
#: --with=sockets --with=xattrs --with=acl --with=selinux --with=fcaps --exclude-file=no``.
DEFAULT_FEATURE_FLAGS = (
    ff.WITH_32BIT_UIDS | ff.WITH_NSEC_TIME | ff.WITH_SYMLINKS | ff.WITH_DEVICE_NODES
    | ff.WITH_FIFOS | ff.WITH_SOCKETS | ff.WITH_XATTRS | ff.WITH_ACL | ff.WITH_SELINUX
    | ff.WITH_FCAPS | ff.EXCLUDE_NODUMP
)
#: What desync (Go) writes into every archive (``catar.md`` §3.2).
DESYNC_FEATURE_FLAGS = 0xB000000010001F22

#: chattr(1) attributes, as catar flag bits.
WITH_CHATTR = 0x3FF0000
#: FAT attributes, as catar flag bits.
WITH_FAT_ATTRS = 0xE000
#: Bits that may appear in an ENTRY's ``flags`` field.
ENTRY_FLAG_BITS = WITH_CHATTR | WITH_FAT_ATTRS | ff.WITH_SUBVOLUME | ff.WITH_SUBVOLUME_RO
#: Time granularity (ns) per time flag, finest first.
TIME_GRANULARITY = (
    (ff.WITH_NSEC_TIME, 1),
    (ff.WITH_USEC_TIME, 1_000),
    (ff.WITH_SEC_TIME, 1_000_000_000),
    (ff.WITH_2SEC_TIME, 2_000_000_000),
)

#: ``WITH_*`` bits our directory reader can record; others are refused rather than
#: silently written as "absent" (FAT attributes, btrfs subvolumes, .caexclude files).
WRITABLE_FEATURES = (
    ff.WITH_16BIT_UIDS | ff.WITH_32BIT_UIDS | ff.WITH_USER_NAMES
    | ff.WITH_SEC_TIME | ff.WITH_USEC_TIME | ff.WITH_NSEC_TIME | ff.WITH_2SEC_TIME
    | ff.WITH_READ_ONLY | ff.WITH_PERMISSIONS | ff.WITH_SYMLINKS | ff.WITH_DEVICE_NODES
    | ff.WITH_FIFOS | ff.WITH_SOCKETS | WITH_CHATTR | ff.WITH_XATTRS | ff.WITH_ACL
    | ff.WITH_SELINUX | ff.WITH_FCAPS | ff.WITH_QUOTA_PROJID
    | ff.EXCLUDE_NODUMP | ff.EXCLUDE_SUBMOUNTS | ff.SHA512_256
)


def time_granularity(feature_flags: int) -> int | None:
    """Nanoseconds per mtime unit for these flags, or None if no mtime is stored."""
    for bit, ns in TIME_GRANULARITY:
        if feature_flags & bit:
            return ns
    return None


def check_writable_flags(feature_flags: int) -> None:
    """Refuse feature sets we cannot write faithfully or that casync would reject."""
    unsupported = feature_flags & ~WRITABLE_FEATURES
    if unsupported:
        raise UsageError(f"cannot write archives with feature flags {unsupported:#x}")
    problem = ff.normalization_problem(feature_flags)
    if problem:
        raise UsageError(f"invalid archive feature flags {feature_flags:#x}: {problem}")


# -- nodes ----------------------------------------------------------------------------


@dataclass(slots=True)
class AclEntry:
    """A named user or group entry of a POSIX ACL (``ACL_USER``/``ACL_GROUP``)."""

    id: int
    permissions: int
    name: bytes | None = None


@dataclass(slots=True)
class Acl:
    """A POSIX ACL in casync's representation (``catar.md`` §2).

    The owner/other permissions and, when a mask exists, the mask live in the node's
    mode; ``group_obj`` holds the owning group's own permissions in that case.

    Attributes:
        users, groups: named entries of the access ACL.
        group_obj: permissions of the owning group when the access ACL has a mask.
        default_user_obj, default_group_obj, default_other, default_mask: the default
            ACL's base entries (directories); None = not set.
        default_users, default_groups: named entries of the default ACL.
    """

    users: list[AclEntry] = field(default_factory=list)
    groups: list[AclEntry] = field(default_factory=list)
    group_obj: int | None = None
    default_user_obj: int | None = None
    default_group_obj: int | None = None
    default_other: int | None = None
    default_mask: int | None = None
    default_users: list[AclEntry] = field(default_factory=list)
    default_groups: list[AclEntry] = field(default_factory=list)

    @property
    def has_access(self) -> bool:
        """Whether there is anything beyond what the mode bits express."""
        return bool(self.users or self.groups or self.group_obj is not None)

    @property
    def has_default(self) -> bool:
        """Whether a default ACL is present."""
        return (
            self.default_user_obj is not None or self.default_group_obj is not None
            or self.default_other is not None or self.default_mask is not None
            or bool(self.default_users or self.default_groups)
        )

    def __bool__(self) -> bool:
        return self.has_access or self.has_default


class Payload(ABC):
    """The content of a regular file, readable once, in order."""

    size: int

    @abstractmethod
    def blocks(self) -> Iterator[bytes | memoryview]:
        """Yield the content; the views are valid until the next one is requested."""

    def regions(self) -> Iterator[tuple[bytes | bytearray | memoryview, int, int]]:
        """Yield the content as ``(buffer, start, length)``: ``buffer[start:start +
        length]``, valid until the next one is requested.

        Like :meth:`blocks`, without making a view per block: a producer whose content
        sits in a buffer it handed out (see :mod:`desync_core.archive.pipeline`) lets
        consumers recognise that buffer.
        """
        for block in self.blocks():
            yield block, 0, len(block)

    def read_all(self) -> bytes:
        """The whole content (only for small files)."""
        return b"".join(bytes(b) for b in self.blocks())

    def readinto(self, view: memoryview) -> int:
        """Read the whole content into ``view`` (``size`` bytes long); return the count.

        A count other than ``size`` means the content did not have the announced size
        (bytes beyond ``view`` are counted but not stored).
        """
        n = 0
        for block in self.blocks():
            k = len(block)
            if n + k <= len(view):
                view[n:n + k] = block
            n += k
        return n


class BytesPayload(Payload):
    """Content held in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def blocks(self) -> Iterator[bytes | memoryview]:
        if self.data:
            yield self.data

    def read_all(self) -> bytes:
        return self.data

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), self.size)
        view[:n] = self.data[:n]
        return self.size


@dataclass(slots=True, eq=False)
class Node:
    """One filesystem object of a node stream.

    Attributes:
        mode: Linux ``st_mode`` (type bits and ``07777``).
        name: the path component (``b""`` for the root).
        path: the path relative to the root, ``/``-separated (``b""`` for the root).
        uid, gid: numeric owner.
        mtime: modification time in ns since the epoch (may be negative).
        flags: chattr/FAT/subvolume attributes as catar ``WITH_FLAG_*`` bits.
        user, group: owner names, when the source records them.
        xattrs: generic extended attributes ``(name, value)``, sorted by name.
        acl: POSIX ACLs, if any beyond the mode bits.
        selinux: SELinux label (without a terminating NUL).
        fcaps: raw ``security.capability`` value (regular files).
        quota_projid: project quota id (0 = none).
        rdev_major, rdev_minor: device numbers (block/char devices).
        target: symlink target.
        size: file size (regular files).
        payload: file content (regular files).
    """

    mode: int
    name: bytes = b""
    path: bytes = b""
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    flags: int = 0
    user: bytes | None = None
    group: bytes | None = None
    xattrs: list[tuple[bytes, bytes]] | None = None
    acl: Acl | None = None
    selinux: bytes | None = None
    fcaps: bytes | None = None
    quota_projid: int = 0
    rdev_major: int = 0
    rdev_minor: int = 0
    target: bytes = b""
    size: int = 0
    payload: Payload | None = None

    @property
    def is_dir(self) -> bool:
        """A directory."""
        return stat.S_ISDIR(self.mode)

    @property
    def display_path(self) -> str:
        """The path for messages (``.`` for the root)."""
        return self.path.decode("utf-8", "backslashreplace") if self.path else "."


class DirEnd:
    """Marks the end of the directory most recently entered in a node stream."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DIR_END"


#: The single end-of-directory marker.
DIR_END = DirEnd()

NodeStream = Iterator[Node | DirEnd]

#: A plain regular file in compact form, ``(name, path, mode, uid, gid, mtime, buffer,
#: start, size)``: no metadata beyond these fields (no names, flags, xattrs, ACLs...),
#: the content is ``buffer[start:start + size]`` and valid until the next item is
#: requested. Producers emit these instead of :class:`Node` objects only to consumers
#: that ask for them (``CatarDecoder.nodes(plain_files=True)``; ``DiskWriter`` and the
#: forked writer accept them): it saves a node and a payload object per file when
#: unpacking.
PlainFile = tuple[bytes, bytes, int, int, int, int, "bytes | bytearray | memoryview", int, int]


#: A node stream that may also carry :data:`PlainFile` tuples (for consumers that
#: accept them, see :attr:`ArchiveFormat.accepts_plain_files`).
PlainNodeStream = Iterator["Node | DirEnd | PlainFile"]


def plain_node(item: PlainFile) -> Node:
    """The :class:`Node` of a :data:`PlainFile` (its content copied)."""
    name, path, mode, uid, gid, mtime, buf, start, size = item
    node = Node(mode, name, path, uid, gid, mtime, size=size)
    node.payload = BytesPayload(bytes(buf[start:start + size]))
    return node


def valid_name(name: bytes) -> bool:
    """A single path component: not empty, not ``.``/``..``, no ``/`` and no NUL."""
    return bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name


def display(name: bytes) -> str:
    """A name or path for error messages."""
    return name.decode("utf-8", "backslashreplace") if name else "."


# -- formats ----------------------------------------------------------------------------


@dataclass
class ArchiveOptions:
    """Settings for reading and writing archive formats.

    Attributes:
        feature_flags: what to record, digest bit included (readers collect only what
            these flags store; the catar writer writes them into every ENTRY).
        no_time: record mtime 0 for everything (``tar --no-time``).
        one_file_system: do not descend into other filesystems (``tar -x``).
        tar_add_root: synthesise a root directory for tar input (``--tar-add-root``).
        no_same_owner: do not restore owners and extended attributes (``untar``).
        no_same_permissions: do not restore permissions and ACLs (``untar``).
        warn: receives warnings (defaults to stderr).
        skip: ``(st_dev, st_ino)`` of files never to archive: a writer adds the file it
            writes to, so archiving a tree that contains the output leaves it out.
    """

    feature_flags: int = DEFAULT_FEATURE_FLAGS | ff.SHA512_256
    no_time: bool = False
    one_file_system: bool = False
    tar_add_root: bool = False
    no_same_owner: bool = False
    no_same_permissions: bool = False
    warn: Callable[[str], None] | None = None
    skip: set[tuple[int, int]] = field(default_factory=set)

    def warning(self, message: str) -> None:
        """Report a warning."""
        if self.warn is not None:
            self.warn(message)
        else:
            import sys

            print(f"Warning: {message}", file=sys.stderr)


@dataclass
class ForkedWriterParts:
    """What :meth:`ArchiveFormat.forked_writer` returns.

    Attributes:
        write: ``write(nodes)``, run in the forked child on the node stream.
        director: ``take(item, busy) -> item or None``, run in the decoding process
            for each item before it is sent (e.g. to make directories early, or write
            a plain file itself while the writer is ``busy``); None for none.
        close: releases what the parts hold, after the run (in the parent).
    """

    write: Callable[[Iterable[Any]], None]
    director: Callable[[Any, bool], Any] | None = None
    close: Callable[[], None] = lambda: None


class ArchiveFormat:
    """A source or destination of node streams, registered by name.

    Register a factory returning an instance through the
    ``desync_register_archive_formats`` hook; ``tar --input-format NAME`` calls
    :meth:`read`, ``untar --output-format NAME`` calls :meth:`write`.
    """

    #: The name used on the command line.
    name: ClassVar[str] = ""
    #: Whether :meth:`read` / :meth:`write` are implemented.
    can_read: ClassVar[bool] = False
    can_write: ClassVar[bool] = False
    #: Capability: :meth:`write` accepts :data:`PlainFile` tuples in the node stream
    #: (regular files without metadata whose content is a region of the archive).
    accepts_plain_files: ClassVar[bool] = False

    def forked_writer(self, target: str, options: ArchiveOptions) -> ForkedWriterParts | None:
        """Capability: the pieces to run this format's writer in a forked process that
        ``untar`` feeds from shared memory (:mod:`desync_core.archive.pipeline`), or
        None (the default: :meth:`write` runs in the decoding process). The writer
        must accept plain files and be safe to run in a forked child."""
        return None

    def read(self, source: str, options: ArchiveOptions) -> NodeStream:
        """Produce the node stream of ``source`` (a path, or ``-`` for stdin)."""
        raise UsageError(f"archive format {self.name!r} cannot be read")

    def write(self, nodes: Iterable[Node | DirEnd], target: str,
              options: ArchiveOptions) -> None:
        """Consume a node stream into ``target`` (a path, or ``-`` for stdout)."""
        raise UsageError(f"archive format {self.name!r} cannot be written")


__all__ = [
    "DEFAULT_FEATURE_FLAGS",
    "DESYNC_FEATURE_FLAGS",
    "DIR_END",
    "Acl",
    "AclEntry",
    "ArchiveFormat",
    "ArchiveOptions",
    "BytesPayload",
    "DirEnd",
    "ForkedWriterParts",
    "Node",
    "NodeStream",
    "Payload",
    "PlainFile",
    "PlainNodeStream",
    "check_writable_flags",
    "display",
    "plain_node",
    "time_granularity",
    "valid_name",
]
