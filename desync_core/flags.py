"""Feature flags shared by catar ENTRY elements and index headers (``catar.md`` §3)."""

from __future__ import annotations

WITH_16BIT_UIDS = 0x1
WITH_32BIT_UIDS = 0x2
WITH_USER_NAMES = 0x4
WITH_SEC_TIME = 0x8
WITH_USEC_TIME = 0x10
WITH_NSEC_TIME = 0x20
WITH_2SEC_TIME = 0x40
WITH_READ_ONLY = 0x80
WITH_PERMISSIONS = 0x100
WITH_SYMLINKS = 0x200
WITH_DEVICE_NODES = 0x400
WITH_FIFOS = 0x800
WITH_SOCKETS = 0x1000
WITH_FLAG_HIDDEN = 0x2000
WITH_FLAG_SYSTEM = 0x4000
WITH_FLAG_ARCHIVE = 0x8000
WITH_FLAG_APPEND = 0x10000
WITH_FLAG_NOATIME = 0x20000
WITH_FLAG_COMPR = 0x40000
WITH_FLAG_NOCOW = 0x80000
WITH_FLAG_NODUMP = 0x100000
WITH_FLAG_DIRSYNC = 0x200000
WITH_FLAG_IMMUTABLE = 0x400000
WITH_FLAG_SYNC = 0x800000
WITH_FLAG_NOCOMP = 0x1000000
WITH_FLAG_PROJINHERIT = 0x2000000
WITH_SUBVOLUME = 0x4000000
WITH_SUBVOLUME_RO = 0x8000000
WITH_XATTRS = 0x10000000
WITH_ACL = 0x20000000
WITH_SELINUX = 0x40000000
WITH_FCAPS = 0x80000000
WITH_QUOTA_PROJID = 0x100000000
EXCLUDE_FILE = 0x1000000000000000
SHA512_256 = 0x2000000000000000
EXCLUDE_SUBMOUNTS = 0x4000000000000000
EXCLUDE_NODUMP = 0x8000000000000000

#: Every bit casync knows (CA_FORMAT_FEATURE_FLAGS_MAX).
FEATURE_FLAGS_MAX = 0xF0000001FFFFFFFF
#: The metadata ("WITH_*") part of the flags.
WITH_MASK = 0x1FFFFFFFF

#: Flags casync writes into a blob index (``index.md`` §2), without the digest bit.
BLOB_INDEX_FLAGS = EXCLUDE_NODUMP | EXCLUDE_FILE
#: What desync writes into a blob index (old casync too), without the digest bit.
DESYNC_BLOB_INDEX_FLAGS = EXCLUDE_NODUMP


def normalization_problem(flags: int) -> str | None:
    """Why casync would reject these flags as not normalised, or None if they are fine."""
    if flags == 0xFFFFFFFFFFFFFFFF:
        return "feature flags are all ones"
    if flags & ~FEATURE_FLAGS_MAX:
        return f"unknown feature flag bits {flags & ~FEATURE_FLAGS_MAX:#x}"
    rules = [
        (WITH_NSEC_TIME, WITH_USEC_TIME | WITH_SEC_TIME | WITH_2SEC_TIME,
         "nsec-time with coarser time"),
        (WITH_USEC_TIME, WITH_SEC_TIME | WITH_2SEC_TIME, "usec-time with coarser time"),
        (WITH_SEC_TIME, WITH_2SEC_TIME, "sec-time with 2sec-time"),
        (WITH_16BIT_UIDS, WITH_32BIT_UIDS, "both 16-bit and 32-bit uids"),
        (WITH_PERMISSIONS, WITH_READ_ONLY, "permissions with read-only"),
        (WITH_ACL, WITH_PERMISSIONS | WITH_READ_ONLY, "acl with permissions or read-only"),
        (EXCLUDE_NODUMP, WITH_FLAG_NODUMP, "exclude-nodump with flag-nodump"),
    ]
    for bit, conflicts, what in rules:
        if flags & bit and flags & conflicts:
            return f"feature flags not normalised ({what})"
    if flags & WITH_ACL and not flags & (WITH_16BIT_UIDS | WITH_32BIT_UIDS | WITH_USER_NAMES):
        return "feature flags not normalised (acl without uids or user names)"
    if flags & WITH_SUBVOLUME_RO and not flags & WITH_SUBVOLUME:
        return "feature flags not normalised (subvolume-ro without subvolume)"
    return None
