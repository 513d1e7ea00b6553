"""Where compiled kernels (chunker, batch hash) are cached, and how they are linked.

Both kernels are numba code compiled once for this CPU into a shared library that later
runs ``dlopen`` without importing numba. They share the cache locations (the user's
``NUMBA_CACHE_DIR``, the kernel package's ``__pycache__``, ``~/.cache/desync``), the
CPU identity in their cache keys, the link step and the policy for when a missing
kernel is compiled. Nothing here imports numba or llvmlite.

When compiling happens (``DESYNC_KERNEL_BUILD``):

* ``auto`` (default): a kernel that is not cached yet is compiled only when the work
  is worth it. Inputs of up to :data:`SMALL_INPUT_BYTES` are chunked by the
  vectorised numpy chunker and hashed by hashlib, at once; the ``desync`` command then
  compiles the kernels for next time in a detached, low-priority process (a library
  user's process starts none). Larger inputs compile both kernels first, as does an
  explicit ``warm_up()``; a library process (not the CLI) also builds the hash kernel
  on first use.
* ``foreground``: compile missing kernels when first needed (never in the background).
* ``never``: never compile; without cached kernels numpy and hashlib do all the work
  (``DESYNC_CHUNKER_KERNEL=numba`` still demands, and compiles, the chunker).

Compiling takes seconds; processes that would compile one kernel at the same time
wait for each other through a lock file in the cache directory, then load the result.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Inputs up to this size are chunked without compiling a missing kernel. Measured on
#: the 2-core benchmark machine: ``make`` of 256 MB takes ~1.3 s longer with the numpy
#: chunker than with the compiled one, while compiling takes 4-8 s; beyond this size
#: the kernel is compiled (once: it is cached).
SMALL_INPUT_BYTES = 256 * 1024 * 1024
#: The module that ``python -m`` runs to build every kernel in the background.
BUILDER_MODULE = "desync_core.chunker._build"
BUILD_MODES = ("auto", "foreground", "never")

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
    # Imported here: every command imports this module, few ever link.
    import shutil
    import subprocess
    import tempfile

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


def build_mode() -> str:
    """``DESYNC_KERNEL_BUILD``: ``auto`` (default), ``foreground`` or ``never`` (see the
    module docstring).

    Raises:
        UsageError: another value.
    """
    mode = os.environ.get("DESYNC_KERNEL_BUILD", "auto").strip().lower() or "auto"
    if mode not in BUILD_MODES:
        from desync_core.errors import UsageError

        raise UsageError("DESYNC_KERNEL_BUILD must be 'auto', 'foreground' or 'never', "
                         f"not {mode!r}")
    return mode


def in_cli() -> bool:
    """Whether this is the ``desync`` command's process (not a library user's)."""
    import desync_core

    return bool(desync_core.running_cli)


@contextlib.contextmanager
def build_lock(directory: Path | None, name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold ``directory/.build-<name>.lock`` while compiling ``name``.

    Yields whether the lock is held: False if ``directory`` is None or unwritable (no
    lock: compile anyway) or, with ``wait=False``, if another process holds it.
    """
    if directory is None:
        yield False
        return
    try:
        fd = os.open(directory / f".build-{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


_background_lock = threading.Lock()
_background_started = False
_large_input = False


def note_large_input() -> None:
    """Record that this process compiles the chunker for a large input: the hash
    kernel is then compiled in the foreground too (the work pays for it)."""
    global _large_input
    _large_input = True


def large_input_noted() -> bool:
    """Whether :func:`note_large_input` was called in this process."""
    return _large_input


def start_background_build(package_dir: Path) -> bool:
    """Compile every kernel for later runs in a detached, low-priority process.

    Only the ``desync`` command does this (a library must not leave processes behind),
    only in ``auto`` mode, only once per process and only if a cache directory of
    ``package_dir``'s kernel is writable (otherwise the work would be lost). Returns
    whether a builder was started.
    """
    global _background_started
    with _background_lock:
        if _background_started or not in_cli() or build_mode() != "auto":
            return False
        _background_started = True
        if writable_dir(cache_dirs(package_dir)) is None:
            return False
        import subprocess

        import desync_core

        env = dict(os.environ)
        # The builder must import this very installation (it may be on sys.path only).
        root = str(Path(desync_core.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            subprocess.Popen([sys.executable, "-m", BUILDER_MODULE], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True,
                             close_fds=True)
        except OSError:
            return False
        return True


__all__ = ["BUILDER_MODULE", "BUILD_MODES", "SMALL_INPUT_BYTES", "build_lock", "build_mode",
           "cache_dirs", "cpu_identity", "in_cli", "large_input_noted", "link_shared_library",
           "load_function", "note_large_input", "start_background_build", "writable_dir"]
