"""The cached machine code of the numba kernel (``desync_core.chunker._native``)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from desync_core.chunker import ChunkerParams, _native, find_cuts
from desync_core.chunker.params import lemire_multiplier

PARAMS = (ChunkerParams(), ChunkerParams(64, 256, 1024), ChunkerParams(100, 100, 100),
          ChunkerParams(1, 4, 4))


def call(fn: _native.KernelFn, data: bytes, params: ChunkerParams, eof: bool = True) -> list[int]:
    buf = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(len(data) // min(params.min, 48) + 2, dtype=np.int64)
    k = fn(buf.ctypes.data, len(data), eof, params.min, params.max,
           lemire_multiplier(params.discriminator), params.fixed_size, out.ctypes.data, len(out))
    return out[:k].tolist()


def check(fn: _native.KernelFn) -> None:
    data = random.Random(9).randbytes(300_000)
    for params in PARAMS:
        assert call(fn, data, params) == find_cuts(data, params).tolist()
        assert call(fn, data, params, eof=False) == find_cuts(data, params, eof=False).tolist()


@pytest.fixture(scope="module")
def llvm():  # type: ignore[no-untyped-def]
    return _native._llvm()


@pytest.fixture(scope="module")
def blob(llvm) -> bytes:  # type: ignore[no-untyped-def]
    """A freshly compiled ``.o`` cache file (numba compiles the kernel: ~1-2 s)."""
    return _native.build_object(llvm)


def test_object_file_loads_with_mcjit(llvm, blob: bytes) -> None:  # type: ignore[no-untyped-def]
    check(_native.load_object(llvm, blob))


def test_shared_library_builds_and_loads(llvm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "kernel.so"
    if not _native.build_shared_library(llvm, path):
        pytest.skip("no C compiler or linker installed")
    check(_native.load_shared_library(path))


def test_damaged_cache_files_are_rejected(llvm, blob: bytes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="not a kernel cache file"):
        _native.load_object(llvm, b"garbage" + blob)
    damaged = bytearray(blob)
    damaged[-100] ^= 0xFF
    with pytest.raises(ValueError, match="corrupt"):
        _native.load_object(llvm, bytes(damaged))
    bogus = tmp_path / "bogus.so"
    bogus.write_bytes(b"\x7fELF not really")
    with pytest.raises(OSError, match=r"bogus\.so"):
        _native.load_shared_library(bogus)


def test_cached_kernel_loads_without_numba_or_llvmlite() -> None:
    find_cuts(b"x" * 1000, ChunkerParams())  # builds the cache files if needed
    key = _native.cache_key()
    has_so = any((d / f"chunker-{key}.so").is_file() for d in _native._cache_dirs())
    code = ("import sys\n"
            "from desync_core.chunker import find_cuts, ChunkerParams\n"
            "print(len(find_cuts(bytes(range(256)) * 4000, ChunkerParams(64, 256, 1024))),"
            " 'numba' in sys.modules, 'llvmlite' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    expected = len(find_cuts(bytes(range(256)) * 4000, ChunkerParams(64, 256, 1024)))
    assert out[:2] == [str(expected), "False"]
    if has_so:
        assert out[2] == "False"


def test_damaged_shared_library_in_cache_is_skipped(tmp_path: Path) -> None:
    """A garbage ``.so`` in the first cache directory: the next one is used."""
    find_cuts(b"x" * 1000, ChunkerParams())
    own = tmp_path / "desync"
    own.mkdir()
    (own / f"chunker-{_native.cache_key()}.so").write_bytes(b"garbage")
    code = ("from desync_core.chunker import find_cuts, ChunkerParams\n"
            "print(find_cuts(bytes(range(200)) * 50, ChunkerParams(48, 64, 100)).tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))).stdout
    assert out.strip() == str(find_cuts(bytes(range(200)) * 50, ChunkerParams(48, 64, 100))
                              .tolist())


def test_ir_stubs_replace_external_symbols(llvm) -> None:  # type: ignore[no-untyped-def]
    ir = "\n".join([
        "@PyExc_RuntimeError = external global i8",
        "declare void @numba_gil_ensure(ptr) local_unnamed_addr",
        "declare i32 @llvm.fshl.i32(i32, i32, i32) #2",
        "define i32 @f(i32 %x) {",
        "  ret i32 %x",
        "}",
    ])
    module = llvm.parse_assembly(_native._self_contained_ir(ir))
    module.verify()
    declared = {f.name for f in module.functions if f.is_declaration}
    assert declared <= {"llvm.fshl.i32", "llvm.trap"}
    assert not [g for g in module.global_variables if g.is_declaration]
