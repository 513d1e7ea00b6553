"""Extended attributes as casync stores them, and POSIX ACLs in their xattr form.

casync keeps only ``user.*`` and ``trusted.*`` attributes as XATTR elements; the file
capability (``security.capability``), the SELinux label (``security.selinux``) and the
POSIX ACLs (``system.posix_acl_access``/``_default``) have elements of their own. The
helpers here sort raw ``(name, value)`` pairs into those fields of a
:class:`~desync_core.archive.base.Node`, and turn ACLs back into the kernel's binary
xattr format (``struct posix_acl_xattr_header`` + entries) for extraction.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterable

from desync_core import flags as ff
from desync_core.archive.base import Acl, AclEntry, Node
from desync_core.errors import ArchiveFormatError

XATTR_CAPABILITY = b"security.capability"
XATTR_SELINUX = b"security.selinux"
XATTR_ACL_ACCESS = b"system.posix_acl_access"
XATTR_ACL_DEFAULT = b"system.posix_acl_default"

# struct posix_acl_xattr_entry tags (linux/posix_acl.h)
ACL_USER_OBJ = 0x01
ACL_USER = 0x02
ACL_GROUP_OBJ = 0x04
ACL_GROUP = 0x08
ACL_MASK = 0x10
ACL_OTHER = 0x20
_ACL_VERSION = 2
_UNDEFINED_ID = 0xFFFFFFFF
_ENTRY = struct.Struct("<HHI")


def stored_as_xattr(name: bytes) -> bool:
    """Whether casync keeps an attribute of this name as an XATTR element."""
    return name.startswith((b"user.", b"trusted."))


def parse_acl_xattr(value: bytes) -> list[tuple[int, int, int]]:
    """Entries ``(tag, permissions, id)`` of a ``system.posix_acl_*`` value."""
    if len(value) < 4 or (len(value) - 4) % _ENTRY.size:
        raise ArchiveFormatError("malformed POSIX ACL attribute")
    (version,) = struct.unpack_from("<I", value)
    if version != _ACL_VERSION:
        raise ArchiveFormatError(f"unsupported POSIX ACL version {version}")
    return [_ENTRY.unpack_from(value, off) for off in range(4, len(value), _ENTRY.size)]


def acl_from_xattrs(access: bytes | None, default: bytes | None) -> Acl | None:
    """casync's view of a file's ACLs (``None`` when they add nothing to the mode)."""
    acl = Acl()
    if access:
        group_obj = None
        has_mask = False
        for tag, perm, ident in parse_acl_xattr(access):
            if tag == ACL_USER:
                acl.users.append(AclEntry(ident, perm & 7))
            elif tag == ACL_GROUP:
                acl.groups.append(AclEntry(ident, perm & 7))
            elif tag == ACL_GROUP_OBJ:
                group_obj = perm & 7
            elif tag == ACL_MASK:
                has_mask = True
        # Without a mask the group bits of the mode are the owning group's permissions.
        if has_mask:
            acl.group_obj = group_obj
    if default:
        for tag, perm, ident in parse_acl_xattr(default):
            perm &= 7
            if tag == ACL_USER_OBJ:
                acl.default_user_obj = perm
            elif tag == ACL_USER:
                acl.default_users.append(AclEntry(ident, perm))
            elif tag == ACL_GROUP_OBJ:
                acl.default_group_obj = perm
            elif tag == ACL_GROUP:
                acl.default_groups.append(AclEntry(ident, perm))
            elif tag == ACL_MASK:
                acl.default_mask = perm
            elif tag == ACL_OTHER:
                acl.default_other = perm
    return acl if acl else None


def _build(base: list[tuple[int, int]], users: list[AclEntry], groups: list[AclEntry],
           mask: int | None) -> bytes:
    """The xattr value for USER_OBJ/GROUP_OBJ/OTHER (in ``base``) plus named entries."""
    out = [struct.pack("<I", _ACL_VERSION)]
    perms = dict(base)
    out.append(_ENTRY.pack(ACL_USER_OBJ, perms[ACL_USER_OBJ], _UNDEFINED_ID))
    out.extend(_ENTRY.pack(ACL_USER, e.permissions, e.id) for e in sorted(users, key=_id))
    out.append(_ENTRY.pack(ACL_GROUP_OBJ, perms[ACL_GROUP_OBJ], _UNDEFINED_ID))
    out.extend(_ENTRY.pack(ACL_GROUP, e.permissions, e.id) for e in sorted(groups, key=_id))
    if mask is None and (users or groups):
        # The kernel requires a mask once there are named entries.
        mask = perms[ACL_GROUP_OBJ]
        for e in (*users, *groups):
            mask |= e.permissions
    if mask is not None:
        out.append(_ENTRY.pack(ACL_MASK, mask, _UNDEFINED_ID))
    out.append(_ENTRY.pack(ACL_OTHER, perms[ACL_OTHER], _UNDEFINED_ID))
    return b"".join(out)


def _id(entry: AclEntry) -> int:
    return entry.id


def acl_access_xattr(acl: Acl, mode: int) -> bytes | None:
    """The ``system.posix_acl_access`` value restoring ``acl`` on a file with ``mode``."""
    if not acl.has_access:
        return None
    group_bits = (mode >> 3) & 7
    group_obj = acl.group_obj if acl.group_obj is not None else group_bits
    base = [(ACL_USER_OBJ, (mode >> 6) & 7), (ACL_GROUP_OBJ, group_obj), (ACL_OTHER, mode & 7)]
    return _build(base, acl.users, acl.groups, group_bits)


def acl_default_xattr(acl: Acl, mode: int) -> bytes | None:
    """The ``system.posix_acl_default`` value of a directory (missing entries from mode)."""
    if not acl.has_default:
        return None

    def pick(value: int | None, shift: int) -> int:
        return value if value is not None else (mode >> shift) & 7

    base = [(ACL_USER_OBJ, pick(acl.default_user_obj, 6)),
            (ACL_GROUP_OBJ, pick(acl.default_group_obj, 3)),
            (ACL_OTHER, pick(acl.default_other, 0))]
    return _build(base, acl.default_users, acl.default_groups, acl.default_mask)


def classify(node: Node, pairs: Iterable[tuple[bytes, bytes]], feature_flags: int) -> None:
    """Sort raw extended attributes into ``node``'s fields, keeping what the flags store.

    Mirrors casync's encoder: ``user.*``/``trusted.*`` become XATTR elements (sorted by
    name), ``security.capability`` becomes FCAPS (regular files only), the SELinux label
    and POSIX ACLs get their own elements; everything else is not stored.
    """
    xattrs: list[tuple[bytes, bytes]] = []
    access = default = None
    for name, value in pairs:
        if stored_as_xattr(name):
            if feature_flags & ff.WITH_XATTRS:
                xattrs.append((name, value))
        elif name == XATTR_CAPABILITY:
            if feature_flags & ff.WITH_FCAPS and stat.S_ISREG(node.mode):
                node.fcaps = value
        elif name == XATTR_SELINUX:
            if feature_flags & ff.WITH_SELINUX:
                label = value[:-1] if value.endswith(b"\0") else value
                if label:
                    node.selinux = label
        elif name == XATTR_ACL_ACCESS:
            access = value
        elif name == XATTR_ACL_DEFAULT:
            default = value
    if xattrs:
        xattrs.sort()
        node.xattrs = xattrs
    if feature_flags & ff.WITH_ACL and (access or default):
        node.acl = acl_from_xattrs(access, default if stat.S_ISDIR(node.mode) else None)


__all__ = [
    "XATTR_ACL_ACCESS",
    "XATTR_ACL_DEFAULT",
    "XATTR_CAPABILITY",
    "XATTR_SELINUX",
    "acl_access_xattr",
    "acl_default_xattr",
    "acl_from_xattrs",
    "classify",
    "parse_acl_xattr",
    "stored_as_xattr",
]
