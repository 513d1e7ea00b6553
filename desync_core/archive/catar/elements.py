"""catar's element types, layouts, limits and GOODBYE tables (``catar.md`` §2-§4)."""

from __future__ import annotations

import re
import struct
from functools import lru_cache
from typing import Any

from desync_core import flags as ff
from desync_core.archive.siphash import name_hashes

# -- element types (catar.md §2) --------------------------------------------------------

ENTRY = 0x1396FABCEA5BBB51
USER = 0xF453131AAEEACCB3
GROUP = 0x25EB6AC969396A52
XATTR = 0xB8157091F80BC486
ACL_USER = 0x297DC88B2EF12FAF
ACL_GROUP = 0x36F2ACB56CB3DD0B
ACL_GROUP_OBJ = 0x23047110441F38F3
ACL_DEFAULT = 0xFE3EEDA6823C8CD0
ACL_DEFAULT_USER = 0xBDF03DF9BD010A91
ACL_DEFAULT_GROUP = 0xA0CB1168782D1F51
FCAPS = 0xF7267DB0AFED0629
QUOTA_PROJID = 0x161BAF2D8772A72B
SELINUX = 0x46FAF0602FD26C59
SYMLINK = 0x664A6FB6830E0D6C
DEVICE = 0xAC3DACE369DFE643
PAYLOAD = 0x8B9E1D93D6DCFFC9
FILENAME = 0x6DBB6EBCB3161F0B
GOODBYE = 0xDFD35C5E8327C403
GOODBYE_TAIL_MARKER = 0x57446FA533702943

ELEMENT_NAMES = {
    ENTRY: "ENTRY", USER: "USER", GROUP: "GROUP", XATTR: "XATTR", ACL_USER: "ACL_USER",
    ACL_GROUP: "ACL_GROUP", ACL_GROUP_OBJ: "ACL_GROUP_OBJ", ACL_DEFAULT: "ACL_DEFAULT",
    ACL_DEFAULT_USER: "ACL_DEFAULT_USER", ACL_DEFAULT_GROUP: "ACL_DEFAULT_GROUP",
    FCAPS: "FCAPS", QUOTA_PROJID: "QUOTA_PROJID", SELINUX: "SELINUX", SYMLINK: "SYMLINK",
    DEVICE: "DEVICE", PAYLOAD: "PAYLOAD", FILENAME: "FILENAME", GOODBYE: "GOODBYE",
}

U64_MAX = 0xFFFFFFFFFFFFFFFF
HEADER = struct.Struct("<QQ")
ENTRY_STRUCT = struct.Struct("<8Q")
ENTRY_BODY_STRUCT = struct.Struct("<6Q")
QQQ = struct.Struct("<QQQ")
QQQQ = struct.Struct("<QQQQ")
U64_STRUCT = struct.Struct("<Q")
ITEM = struct.Struct("<QQQ")

#: Limits casync applies (catar.md §2).
MAX_NAME = 256  # filename incl. NUL
MAX_USER = 256
MAX_XATTR = 16 + 255 + 1 + 65536
MAX_FCAPS = 16 + 65536
MAX_SELINUX = 16 + 4096
MAX_SYMLINK = 16 + 4096

#: Bytes per block handed to consumers of an encoded stream.
BLOCK_SIZE = 1 << 20
#: Files up to this size are copied into the output buffer; larger ones are streamed.
SMALL_FILE = 1 << 16
#: Output block buffer: a block is handed out once it holds BLOCK_SIZE bytes.
BLOCK_CAPACITY = BLOCK_SIZE + SMALL_FILE + (1 << 16)

UID_FLAGS = ff.WITH_16BIT_UIDS | ff.WITH_32BIT_UIDS
USER_NAME_RE = re.compile(rb"[A-Za-z_][A-Za-z0-9_-]*")


def valid_user_name(name: bytes) -> bool:
    """casync's rule for USER/GROUP names: ``[A-Za-z_][A-Za-z0-9_-]*``, not ``root``."""
    return len(name) < MAX_USER and name != b"root" and USER_NAME_RE.fullmatch(name) is not None


# -- GOODBYE tables ---------------------------------------------------------------------


@lru_cache(maxsize=4096)
def bst_order(n: int) -> tuple[int, ...]:
    """For ``n`` hash-sorted items, the sorted index stored at each table position.

    casync's ``ca_make_bst`` (``catar.md`` §5.2): a complete binary search tree laid
    out like a heap, so a reader can binary-search the table by hash.
    """
    out = [0] * n

    def place(lo: int, count: int, levels: int, i: int) -> None:
        while count:
            p = 1 << (levels - 1)
            # left subtree size: full if the bottom level is at least half full
            k = p - 1 if count >= p - 1 + p // 2 else count - p // 2
            out[i] = lo + k
            place(lo, k, levels - 1, 2 * i + 1)
            lo, count, levels, i = lo + k + 1, count - k - 1, levels - 1, 2 * i + 2

    if n:
        place(0, n, n.bit_length(), 0)
    return tuple(out)


def make_bst(items: list[Any]) -> list[Any]:
    """Permute sorted ``items`` into BST order (the test vectors' ``make_bst``)."""
    return [items[i] for i in bst_order(len(items))]


def goodbye_items(starts: list[int], names: list[bytes],
                  goodbye_offset: int) -> list[tuple[int, int, int]]:
    """The ``(offset, size, hash)`` items of a directory's GOODBYE table, in table order.

    Args:
        starts: absolute offsets of the children's FILENAME elements.
        names: the children's names.
        goodbye_offset: absolute offset of the GOODBYE element.

    Equal hashes are ordered like casync does (earlier child first).
    """
    n = len(starts)
    hashes = name_hashes(names)
    ends = [*starts[1:], goodbye_offset]
    keyed = sorted(range(n), key=lambda i: (hashes[i], i))
    return [
        (goodbye_offset - starts[j], ends[j] - starts[j], hashes[j])
        for j in (keyed[k] for k in bst_order(n))
    ]


class OpenDir:
    """A directory being encoded or decoded: where its ENTRY is, its children so far."""

    __slots__ = ("entry_offset", "names", "path", "starts")

    def __init__(self, entry_offset: int, path: bytes) -> None:
        self.entry_offset = entry_offset
        self.path = path
        self.starts: list[int] = []
        self.names: list[bytes] = []
