"""Tree snapshots for tests that compare directory trees (extracted vs source, ours vs
casync's or GNU tar's), for the core's tests and for plugins."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def snapshot(root: str | os.PathLike[str], *, times: bool = True, owners: bool = True,
             modes: bool = True, xattrs: bool = True,
             skip_xattr_on_special: bool = False) -> dict[str, dict[str, Any]]:
    """Everything a tree comparison looks at, keyed by relative path (``.`` = root).

    File content is compared by SHA-256; symlink mtimes are included (casync and
    ``desync untar`` both restore them). ``security.selinux`` values are compared
    without a trailing NUL (libselinux adds one, ``setfattr`` does not).
    """
    out: dict[str, dict[str, Any]] = {}
    root = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        entries = [dirpath] if dirpath == root else []
        entries += [os.path.join(dirpath, n) for n in dirnames + filenames]
        for path in entries:
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            info: dict[str, Any] = {"type": stat.S_IFMT(st.st_mode)}
            if modes:
                info["mode"] = stat.S_IMODE(st.st_mode)
            if owners:
                info["owner"] = (st.st_uid, st.st_gid)
            if times:
                info["mtime"] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                info["target"] = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            special = not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))
            if xattrs and not (skip_xattr_on_special and special):
                values = {}
                for name in os.listxattr(path, follow_symlinks=False):
                    value = os.getxattr(path, name, follow_symlinks=False)
                    if name == "security.selinux":
                        value = value.rstrip(b"\0")
                    values[name] = value
                info["xattrs"] = values
            out[rel] = info
    return out


def diff(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences of two snapshots (empty if identical)."""
    lines = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            lines.append(f"{key}: only in {'second' if key not in a else 'first'}")
        elif a[key] != b[key]:
            changed = {k: (a[key].get(k), b[key].get(k)) for k in set(a[key]) | set(b[key])
                       if a[key].get(k) != b[key].get(k)}
            lines.append(f"{key}: {changed}")
    return lines


__all__ = ["diff", "snapshot"]
