"""Helpers of desync-format-tar's tests: trees with everything tar can hold."""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: u::rw-, u:1000:rw-, g::r--, m::rw-, o::r--
ACL_USER_1000_RW = bytes.fromhex(
    "02000000" "0100" "0600" "ffffffff" "0200" "0600" "e8030000" "0400" "0400" "ffffffff"
    "1000" "0600" "ffffffff" "2000" "0400" "ffffffff")
FCAPS_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


def make_tree(root: Path, *, devices: bool = True, whole_seconds: bool = False) -> Path:
    """Everything tar can hold: files (empty, large, setuid, long names), directories,
    symlinks (long targets too), a FIFO, devices, xattrs, a capability, an SELinux
    label, ACLs, owners and nanosecond (or whole-second) mtimes."""
    root.mkdir()
    long_dir = root / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "file.txt").write_bytes(b"hello tar\n")
    (root / os.fsdecode(b"latin1-\xe9")).write_bytes(b"not UTF-8\n")
    (root / "empty").write_bytes(b"")
    (root / "big.bin").write_bytes(bytes(range(256)) * 1200)
    (root / "exec").write_bytes(b"#!/bin/sh\n")
    (long_dir / ("f" * 90)).write_bytes(b"long path\n")
    (root / "sub" / "owned").write_bytes(b"owned\n")
    os.symlink("file.txt", root / "link")
    os.symlink("t" * 150, root / "long-link")
    os.mkfifo(root / "fifo")
    if devices:
        os.mknod(root / "null", stat.S_IFCHR | 0o644, os.makedev(1, 3))
        os.mknod(root / "loop", stat.S_IFBLK | 0o640, os.makedev(7, 1))
    os.chmod(root / "exec", 0o4755)
    os.chmod(root / "sub", 0o2770)
    os.chown(root / "sub", 1000, 100)
    os.chown(root / "sub" / "owned", 1234, 5678)
    os.setxattr(root / "file.txt", "user.comment", b"a comment")
    os.setxattr(root / "sub", "trusted.marker", b"t")
    os.setxattr(root / "exec", "security.capability", FCAPS_NET_RAW)
    os.setxattr(root / "big.bin", "security.selinux", b"system_u:object_r:etc_t:s0\0")
    os.setxattr(root / "empty", "system.posix_acl_access", ACL_USER_1000_RW)
    paths = sorted(root.rglob("*"), key=lambda p: -len(p.parts))
    for i, path in enumerate([*paths, root]):
        ns = 1_700_000_000_000_000_000 + i * (1_000_000_000 if whole_seconds else 1_000_000_007)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    return root
