"""The numba kernel's machine code, cached between runs and loaded without numba.

Why: importing numba and loading even a cached dispatcher costs about 0.6 s per
process (measured on the 2-core benchmark machine: ``import numba`` ~0.25 s, first
call with a cache hit ~0.35 s), more than ``desync make`` needs to chunk and hash
400 MB of already-stored data. So the kernel (:mod:`desync_core.chunker._numba`) is
compiled by numba once, as a C-callable function; its optimised LLVM IR is turned into
an object file for this CPU and stored in a cache directory. Later runs load that
object with llvmlite's MCJIT (about 35 ms including the llvmlite import) and call it
through ctypes, which also releases the GIL for the duration of the call, so threads
can chunk in parallel.

numba's C wrapper contains exception-reporting code that calls into numba's helper
library (``numba_gil_ensure``, ``numba_do_raise``, ...). The kernel cannot raise: it
does no division (the caller passes Lemire's multiplier) and no bounds checks. Those
paths are therefore unreachable; the functions they reference are replaced by stubs
that trap, which keeps the object self-contained (numba's extension modules, which
would define them, are not loaded).

The cache key covers the kernel's source, this module, the numba and llvmlite
installations and the host CPU, so any change recompiles. Cache files are written
atomically (temporary file + rename), so concurrent first runs are safe. Like
``__pycache__``, the cache directory must only be writable by users trusted to supply
code to this process.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: ``int64 f(uint8 *buf, uint64 n, bool eof, uint64 min, uint64 max, uint64 mult,
#: bool fixed, int64 *out, uint64 out_len)``
KernelFn = Callable[[int, int, bool, int, int, int, bool, int, int], int]

_MAGIC = b"desync-chunker-kernel 1\n"
_DECLARE = re.compile(r"^declare (.*?)@([\w.$\"]+)\((.*)\)(.*)$")
_EXTERNAL_GLOBAL = re.compile(r"^(@[\w.$\"]+) = external (global|constant) (.+?)(, align \d+)?$")

# Keeps the execution engine (which owns the loaded code) alive for the process.
_engines: list[Any] = []


def _cache_dirs() -> list[Path]:
    """Where cache files are looked for, in order; the first writable one gets new files.

    ``NUMBA_CACHE_DIR`` (the user's choice for numba's compiled code) comes first,
    then this package's ``__pycache__`` (where numba caches the dispatcher), then the
    user's cache directory.
    """
    dirs = []
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    if numba_dir:
        dirs.append(Path(numba_dir) / "desync")
    dirs.append(Path(__file__).resolve().parent / "__pycache__")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(xdg) / "desync")
    return dirs


def _file_identity(path: str | None) -> str:
    if not path:
        return "-"
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _target_machine(llvm: Any) -> Any:
    """A target machine for this CPU, as numba configures its JIT."""
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # pragma: no cover - feature detection unsupported
        features = ""
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, opt=3,
        reloc="default", codemodel="jitdefault",
    )


def cache_key(llvm: Any) -> str:
    """Hex digest identifying the kernel source, toolchain and CPU."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("_numba.py", "_native.py", "_table.py"):
        h.update((here / name).read_bytes())
    numba_spec = importlib.util.find_spec("numba")
    h.update(_file_identity(numba_spec.origin if numba_spec else None).encode())
    h.update(llvm.llvm_version_info.__repr__().encode())
    h.update(_file_identity(getattr(sys.modules.get("llvmlite"), "__file__", None)).encode())
    h.update(llvm.get_default_triple().encode())
    h.update(llvm.get_host_cpu_name().encode())
    try:
        h.update(llvm.get_host_cpu_features().flatten().encode())
    except RuntimeError:  # pragma: no cover
        pass
    return h.hexdigest()[:32]


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


def build_object(llvm: Any) -> bytes:
    """Compile the kernel with numba; return a cache file's contents (header + object)."""
    from desync_core.chunker._numba import c_kernel_ir

    ir, symbol = c_kernel_ir()
    module = llvm.parse_assembly(_self_contained_ir(ir))
    module.verify()
    external = [f.name for f in module.functions
                if f.is_declaration and not f.name.startswith("llvm.")]
    external += [g.name for g in module.global_variables if g.is_declaration]
    if external:
        raise RuntimeError(f"kernel still references external symbols: {external}")
    obj = _target_machine(llvm).emit_object(module)
    header = {"symbol": symbol, "sha256": hashlib.sha256(obj).hexdigest()}
    return _MAGIC + json.dumps(header).encode() + b"\n" + obj


def load_object(llvm: Any, blob: bytes) -> KernelFn:
    """Load a cache file's object code and return the kernel as a ctypes function.

    Raises:
        ValueError: the file is not a valid, intact cache file.
    """
    if not blob.startswith(_MAGIC):
        raise ValueError("not a kernel cache file")
    header_line, _, obj = blob[len(_MAGIC):].partition(b"\n")
    header = json.loads(header_line)
    if hashlib.sha256(obj).hexdigest() != header["sha256"]:
        raise ValueError("kernel cache file is corrupt")
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine(llvm))
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    address = engine.get_function_address(header["symbol"])
    if not address:
        raise ValueError("kernel symbol missing from cache file")
    _engines.append(engine)
    proto = ctypes.CFUNCTYPE(
        ctypes.c_int64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_bool, ctypes.c_uint64,
        ctypes.c_uint64, ctypes.c_uint64, ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64,
    )
    return proto(address)  # type: ignore[return-value]


def _save(blob: bytes, name: str) -> None:
    for directory in _cache_dirs():
        tmp = directory / f".{name}.{os.getpid()}.tmp"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(blob)
            os.replace(tmp, directory / name)
            return
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
    # No writable cache directory: the kernel works, later runs just compile again.


def load_kernel() -> KernelFn:
    """The kernel: from the cache, or compiled by numba now (and cached)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    name = f"chunker-{cache_key(llvm)}.o"
    for directory in _cache_dirs():
        try:
            blob = (directory / name).read_bytes()
        except OSError:
            continue
        try:
            return load_object(llvm, blob)
        except (ValueError, RuntimeError, KeyError):
            continue  # damaged or foreign file: rebuild below
    blob = build_object(llvm)
    _save(blob, name)
    return load_object(llvm, blob)


__all__ = ["KernelFn", "build_object", "cache_key", "load_kernel", "load_object"]
