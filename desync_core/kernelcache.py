"""Where compiled kernels (chunker, batch hash) are cached, and how they are linked.

Both kernels are numba code compiled once for this CPU into a shared library that later
runs ``dlopen`` without importing numba. They share the cache locations (the user's
``NUMBA_CACHE_DIR``, the kernel package's ``__pycache__``, ``~/.cache/desync``), the
CPU identity in their cache keys and the link step. Nothing here imports numba or
llvmlite.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

# Keeps loaded libraries alive for the process (their functions are called through
# ctypes pointers only).
_loaded: list[ctypes.CDLL] = []


def cpu_identity() -> str:
    """CPU model and feature flags of the first processor (Linux: ``/proc/cpuinfo``),
    else the machine name: compiled code is specific to them."""
    try:
        # Only the first processor's block: generating the whole file can take tens of
        # milliseconds on machines with many CPUs.
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            first = f.read(16384).split("\n\n", 1)[0]
    except OSError:
        return os.uname().machine
    wanted = ("vendor_id", "cpu family", "model", "model name", "flags", "Features",
              "CPU implementer", "CPU part")
    return "\n".join(line for line in first.splitlines()
                     if line.split(":", 1)[0].strip() in wanted)


def cache_dirs(package_dir: Path) -> list[Path]:
    """Where cache files are looked for, in order; the first writable one gets new files.

    ``NUMBA_CACHE_DIR`` (the user's choice for numba's compiled code) comes first, then
    the kernel package's ``__pycache__`` (where numba caches its dispatchers), then the
    user's cache directory. Like ``__pycache__``, these must only be writable by users
    trusted to supply code to this process.
    """
    dirs = []
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    if numba_dir:
        dirs.append(Path(numba_dir) / "desync")
    dirs.append(package_dir / "__pycache__")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(xdg) / "desync")
    return dirs


def writable_dir(dirs: list[Path]) -> Path | None:
    """The first of ``dirs`` that exists (or can be made) and is writable."""
    for directory in dirs:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory
    return None


def link_shared_library(obj: bytes, path: Path) -> bool:
    """Link the object code ``obj`` (no external references) into the shared library
    ``path``, atomically, with the system's C compiler or ``ld``.

    Returns False when no linker is installed or every linker fails.
    """
    linkers = [[cc, "-shared", "-nostdlib"] for cc in
               (os.environ.get("CC"), "cc", "gcc", "clang") if cc and shutil.which(cc)]
    if shutil.which("ld"):
        linkers.append(["ld", "-shared"])
    if not linkers:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        src, out = Path(tmp) / "kernel.o", Path(tmp) / "kernel.so"
        src.write_bytes(obj)
        for cmd in linkers:
            try:
                done = subprocess.run([*cmd, "-o", str(out), str(src)], capture_output=True,
                                      timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if done.returncode == 0 and out.exists():
                os.replace(out, path)
                return True
    return False


def load_function(path: Path, symbol: str, restype: Any, argtypes: list[Any]) -> Any:
    """``dlopen`` the shared library ``path`` (kept loaded) and return ``symbol`` as a
    ctypes function; calls release the interpreter lock.

    Raises:
        OSError: the library cannot be loaded.
        AttributeError: it does not export ``symbol``.
    """
    lib = ctypes.CDLL(str(path))
    fn = lib[symbol]
    fn.restype = restype
    fn.argtypes = argtypes
    _loaded.append(lib)
    return fn


__all__ = ["cache_dirs", "cpu_identity", "link_shared_library", "load_function",
           "writable_dir"]
