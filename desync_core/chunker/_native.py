"""The numba kernel's machine code, cached between runs and loaded without numba.

Why: importing numba and loading even a cached dispatcher costs about 0.6 s per
process (measured on the 2-core benchmark machine: ``import numba`` ~0.25 s, first
call with a cache hit ~0.35 s), more than ``desync make`` needs to chunk and hash
400 MB of already-stored data. So numba compiles the kernel
(:mod:`desync_core.chunker._numba`) once, as a C-callable function, and its optimised
LLVM IR is turned into machine code for this CPU, cached in two forms:

* ``chunker-<key>.so``: a shared library, linked with the system's C compiler (or
  ``ld``) when one is installed. Later runs ``dlopen`` it through ctypes: ~1 ms, and
  neither numba nor llvmlite is imported (llvmlite alone costs ~30 ms and ~50 MB of
  resident memory for its LLVM library).
* ``chunker-<key>.o``: the object file, always written. Without a linker, later runs
  load it with llvmlite's MCJIT (~35 ms).

Either way the kernel is called through ctypes, which releases the GIL for the
duration of the call, so threads can chunk in parallel.

numba's C wrapper contains exception-reporting code that calls into numba's helper
library (``numba_gil_ensure``, ``numba_do_raise``, ...). The kernel cannot raise: it
does no division (the caller passes Lemire's multiplier) and no bounds checks. Those
paths are therefore unreachable; the functions they reference are replaced by stubs
that trap, which keeps the code self-contained (numba's extension modules, which
would define them, are not loaded).

The cache key covers the kernel's source, this module, the numba and llvmlite
installations, the platform and the CPU model and features (the code is compiled for
the host CPU), so any change recompiles. Files are written atomically (temporary file
+ rename), so concurrent first runs are safe; a loaded kernel must pass a self-test
before it is used, otherwise it is rebuilt. Like ``__pycache__``, the cache directory
must only be writable by users trusted to supply code to this process.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from desync_core.kernelcache import (
    build_lock,
    cache_dirs,
    cpu_identity,
    link_shared_library,
    load_function,
    writable_dir,
)

#: ``int64 f(uint8 *buf, uint64 n, bool eof, uint64 min, uint64 max, uint64 mult,
#: bool fixed, int64 *out, uint64 out_len)``
KernelFn = Callable[[int, int, bool, int, int, int, bool, int, int], int]

#: Exported name of the kernel in the shared library (an alias of numba's symbol).
SYMBOL = "desync_find_cuts"
_ARGTYPES = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_bool, ctypes.c_uint64,
             ctypes.c_uint64, ctypes.c_uint64, ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64]
_LLVM_SIGNATURE = "i64 (ptr, i64, i1, i64, i64, i64, i1, ptr, i64)"

_MAGIC = b"desync-chunker-kernel 1\n"
_DECLARE = re.compile(r"^declare (.*?)@([\w.$\"]+)\((.*)\)(.*)$")
_EXTERNAL_GLOBAL = re.compile(r"^(@[\w.$\"]+) = external (global|constant) (.+?)(, align \d+)?$")

# Self-test: random.Random(0).randbytes(4096) chunked with min/avg/max = 64/128/512
# (d = 96), as computed by the reference model of chunking.md §5.
_SELFTEST_SEED = 0
_SELFTEST_CUTS = [129, 379, 527, 684, 814, 1050, 1119, 1192, 1419, 1561, 1707, 1864, 1934,
                  2095, 2217, 2347, 2469, 2714, 3093, 3181, 3663, 3738, 3985, 4061, 4096]

# Keeps MCJIT execution engines (see load_object) alive for the process.
_keep: list[Any] = []


def _cache_dirs() -> list[Path]:
    """Where cache files are looked for (see :func:`desync_core.kernelcache.cache_dirs`)."""
    return cache_dirs(Path(__file__).resolve().parent)


def _file_identity(module: str) -> str:
    """Path, size and mtime of an installed package (changes when it is upgraded)."""
    spec = importlib.util.find_spec(module)
    path = spec.origin if spec else None
    if not path:
        return "-"
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def cache_key() -> str:
    """Hex digest identifying the kernel source, toolchain, platform and CPU."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("_numba.py", "_native.py", "_table.py"):
        h.update((here / name).read_bytes())
    for part in (_file_identity("numba"), _file_identity("llvmlite"), sys.platform,
                 platform.machine(), cpu_identity()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def _target_machine(llvm: Any, *, shared: bool) -> Any:
    """A target machine for this CPU: numba's JIT settings, or PIC for a shared library."""
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # pragma: no cover - feature detection unsupported
        features = ""
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, opt=3,
        reloc="pic" if shared else "default",
        codemodel="default" if shared else "jitdefault",
    )


def _llvm() -> Any:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def _self_contained_ir(ir: str) -> str:
    """Replace external functions and globals by local stubs (see the module docstring)."""
    out = []
    need_trap = True
    for line in ir.splitlines():
        m = _DECLARE.match(line)
        if m and not m.group(2).startswith("llvm."):
            ret, name, params, attrs = m.groups()
            out.append(f"define internal {ret}@{name}({params}){attrs} {{\n"
                       "  call void @llvm.trap()\n  unreachable\n}")
            continue
        if m and m.group(2) == "llvm.trap":
            need_trap = False
        g = _EXTERNAL_GLOBAL.match(line)
        if g:
            out.append(f"{g.group(1)} = internal {g.group(2)} {g.group(3)} zeroinitializer")
            continue
        out.append(line)
    if need_trap:
        out.append("declare void @llvm.trap() cold noreturn nounwind")
    return "\n".join(out) + "\n"


def self_contained_module(llvm: Any, ir: str, symbol: str, export: str,
                          signature: str) -> Any:
    """A numba function's LLVM IR as a verified module that references nothing outside
    itself and exports the function ``symbol`` as ``export`` (of LLVM type
    ``signature``).

    Raises:
        RuntimeError: external references remain.
    """
    ir = _self_contained_ir(ir) + f'@{export} = alias {signature}, ptr @"{symbol}"\n'
    module = llvm.parse_assembly(ir)
    module.verify()
    external = [f.name for f in module.functions
                if f.is_declaration and not f.name.startswith("llvm.")]
    external += [g.name for g in module.global_variables if g.is_declaration]
    if external:
        raise RuntimeError(f"kernel still references external symbols: {external}")
    return module


def _kernel_module(llvm: Any) -> Any:
    """numba's kernel as a verified, self-contained LLVM module exporting SYMBOL."""
    from desync_core.chunker._numba import c_kernel_ir

    return self_contained_module(llvm, *c_kernel_ir(), SYMBOL, _LLVM_SIGNATURE)


def build_object(llvm: Any) -> bytes:
    """Compile the kernel with numba; return a ``.o`` cache file (header + object)."""
    obj = _target_machine(llvm, shared=False).emit_object(_kernel_module(llvm))
    header = {"symbol": SYMBOL, "sha256": hashlib.sha256(obj).hexdigest()}
    return _MAGIC + json.dumps(header).encode() + b"\n" + obj


def build_shared_library(llvm: Any, path: Path) -> bool:
    """Compile the kernel and link it into the shared library ``path`` (atomically).

    Returns False when no linker is available or linking fails.
    """
    obj = _target_machine(llvm, shared=True).emit_object(_kernel_module(llvm))
    return link_shared_library(obj, path)


def load_object(llvm: Any, blob: bytes) -> KernelFn:
    """Load a ``.o`` cache file's code with MCJIT and return the kernel.

    Raises:
        ValueError: the file is not a valid, intact cache file.
    """
    if not blob.startswith(_MAGIC):
        raise ValueError("not a kernel cache file")
    header_line, _, obj = blob[len(_MAGIC):].partition(b"\n")
    header = json.loads(header_line)
    if hashlib.sha256(obj).hexdigest() != header["sha256"]:
        raise ValueError("kernel cache file is corrupt")
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""),
                                        _target_machine(llvm, shared=False))
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    address = engine.get_function_address(header["symbol"])
    if not address:
        raise ValueError("kernel symbol missing from cache file")
    _keep.append(engine)
    proto = ctypes.CFUNCTYPE(ctypes.c_int64, *_ARGTYPES)
    return _checked(proto(address))


def load_shared_library(path: Path) -> KernelFn:
    """``dlopen`` a cached shared library and return the kernel.

    Raises:
        OSError: the library cannot be loaded.
        ValueError: it does not compute the expected chunks.
    """
    return _checked(load_function(path, SYMBOL, ctypes.c_int64, _ARGTYPES))


def _checked(fn: KernelFn) -> KernelFn:
    """``fn`` if it chunks the self-test input correctly, else ValueError."""
    import random

    from desync_core.chunker.params import ChunkerParams, lemire_multiplier

    data = (ctypes.c_uint8 * 4096).from_buffer_copy(random.Random(_SELFTEST_SEED).randbytes(4096))
    out = (ctypes.c_int64 * 128)()
    params = ChunkerParams(64, 128, 512)
    k = fn(ctypes.addressof(data), 4096, True, params.min, params.max,
           lemire_multiplier(params.discriminator), False, ctypes.addressof(out), 128)
    if list(out[:k]) != _SELFTEST_CUTS:
        raise ValueError("cached kernel failed its self-test")
    return fn


def _save(data: bytes, name: str) -> None:
    for directory in _cache_dirs():
        tmp = directory / f".{name}.{os.getpid()}.tmp"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, directory / name)
            return
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
    # No writable cache directory: the kernel works, later runs just compile again.


def _names() -> tuple[str, str]:
    key = cache_key()
    return f"chunker-{key}.so", f"chunker-{key}.o"


def load_cached() -> KernelFn | None:
    """The kernel from the cache (shared library first), or None: nothing is compiled
    and numba is not imported (the object file needs llvmlite)."""
    so_name, obj_name = _names()
    for directory in _cache_dirs():
        if (directory / so_name).is_file():
            try:
                return load_shared_library(directory / so_name)
            except (OSError, ValueError, AttributeError):
                continue  # damaged or foreign: try the object file, else rebuild
    llvm = None
    for directory in _cache_dirs():
        try:
            blob = (directory / obj_name).read_bytes()
        except OSError:
            continue
        llvm = llvm or _llvm()
        try:
            return load_object(llvm, blob)
        except (ValueError, RuntimeError, KeyError):
            continue
    return None


def load_kernel() -> KernelFn:
    """The kernel: from the cache, or compiled now and cached.

    Concurrent processes compile one at a time (a lock file in the cache directory);
    the others then load the cached result.
    """
    cached = load_cached()
    if cached is not None:
        return cached
    with build_lock(writable_dir(_cache_dirs()), "chunker"):
        return load_cached() or _build()


def build_if_missing() -> None:
    """Compile and cache the kernel unless it is cached, being compiled by another
    process, or no cache directory is writable."""
    with build_lock(writable_dir(_cache_dirs()), "chunker", wait=False) as held:
        if held and load_cached() is None:
            _build()


def _build() -> KernelFn:
    """Compile the kernel, cache it (object file, and shared library if a linker is
    installed) and return it."""
    so_name, obj_name = _names()
    llvm = _llvm()
    blob = build_object(llvm)
    _save(blob, obj_name)
    built = _try_shared_library(llvm, so_name)
    if built is not None:
        try:
            return load_shared_library(built)
        except (OSError, ValueError, AttributeError):
            pass
    return load_object(llvm, blob)


def _try_shared_library(llvm: Any, name: str) -> Path | None:
    """Build the shared library into the first writable cache directory, if possible."""
    directory = writable_dir(_cache_dirs())
    if directory is None:
        return None
    try:
        return directory / name if build_shared_library(llvm, directory / name) else None
    except (OSError, RuntimeError, ValueError):
        return None


__all__ = [
    "SYMBOL",
    "KernelFn",
    "build_if_missing",
    "build_object",
    "build_shared_library",
    "cache_key",
    "load_cached",
    "load_kernel",
    "load_object",
    "load_shared_library",
]
