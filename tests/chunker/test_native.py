"""The cached machine code of the numba kernel (``desync_core.chunker._native``)."""

from __future__ import annotations

import random
import subprocess
import sys

import llvmlite.binding as llvm
import numpy as np
import pytest

from desync_core.chunker import ChunkerParams, _native, find_cuts
from desync_core.chunker.params import lemire_multiplier


def call(fn: _native.KernelFn, data: bytes, params: ChunkerParams, eof: bool = True) -> list[int]:
    buf = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(len(data) // params.min + 2, dtype=np.int64)
    k = fn(buf.ctypes.data, len(data), eof, params.min, params.max,
           lemire_multiplier(params.discriminator), params.fixed_size, out.ctypes.data, len(out))
    return out[:k].tolist()


@pytest.fixture(scope="module")
def blob() -> bytes:
    """A freshly compiled cache file (numba compiles the kernel: ~1-2 s)."""
    return _native.build_object(llvm)


def test_built_object_is_self_contained_and_correct(blob: bytes) -> None:
    fn = _native.load_object(llvm, blob)
    data = random.Random(9).randbytes(500_000)
    for params in (ChunkerParams(), ChunkerParams(64, 256, 1024), ChunkerParams(100, 100, 100)):
        assert call(fn, data, params) == find_cuts(data, params).tolist()
        assert call(fn, data, params, eof=False) == \
            find_cuts(data, params, eof=False).tolist()


def test_damaged_cache_files_are_rejected(blob: bytes) -> None:
    with pytest.raises(ValueError, match="not a kernel cache file"):
        _native.load_object(llvm, b"garbage" + blob)
    damaged = bytearray(blob)
    damaged[-100] ^= 0xFF
    with pytest.raises(ValueError, match="corrupt"):
        _native.load_object(llvm, bytes(damaged))


def test_cached_kernel_loads_without_numba() -> None:
    find_cuts(b"x" * 1000, ChunkerParams())  # builds the cache file if needed
    code = ("import sys\n"
            "from desync_core.chunker import find_cuts, ChunkerParams\n"
            "print(len(find_cuts(bytes(range(256)) * 4000, ChunkerParams())),"
            " 'numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(len(find_cuts(bytes(range(256)) * 4000, ChunkerParams()))), "False"]


def test_ir_stubs_replace_external_symbols() -> None:
    ir = "\n".join([
        "@PyExc_RuntimeError = external global i8",
        "declare void @numba_gil_ensure(ptr) local_unnamed_addr",
        "declare i32 @llvm.fshl.i32(i32, i32, i32) #2",
        "define i32 @f(i32 %x) {",
        "  ret i32 %x",
        "}",
    ])
    out = _native._self_contained_ir(ir)
    module = llvm.parse_assembly(out)
    module.verify()
    declared = {f.name for f in module.functions if f.is_declaration}
    assert declared <= {"llvm.fshl.i32", "llvm.trap"}
    assert not [g for g in module.global_variables if g.is_declaration]
