"""The vectorised numpy chunker (``chunker._vector``) against the golden vectors, the
reference model and the compiled kernel."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_core.chunker import DEFAULT_PARAMS, ChunkerParams, _reference, _vector, find_cuts
from desync_core.index import Index


def vector_cuts(data: bytes, params: ChunkerParams, eof: bool = True) -> list[int]:
    buf = np.frombuffer(data, dtype=np.uint8)
    return _vector.find_cuts(buf, len(buf), eof, params).tolist()


def test_golden_chunker_input(testdata: Path) -> None:
    """chunking.md §9.1: ``chunker.input`` gives exactly ``chunker.index``'s chunks."""
    data = (testdata / "testdata" / "chunker.input").read_bytes()
    index = Index.from_bytes((testdata / "testdata" / "chunker.index").read_bytes())
    assert vector_cuts(data, DEFAULT_PARAMS) == index.ends.tolist()


def test_discriminator_clamp(testdata: Path) -> None:
    """chunking.md §9.4: min > d(avg) uses d = min."""
    data = (testdata / "testdata" / "chunker.input").read_bytes()
    params = ChunkerParams(61440, 65536, 262144)
    ends = vector_cuts(data, params)
    assert ends == [63983, 165145, 241973, 458663, 606414, 780024, 883626, 1048576]


@pytest.mark.parametrize("name", ["blob1", "blob2"])
def test_desync_blobs_with_small_chunks(cmd_testdata: Path, name: str) -> None:
    """desync's blob indexes (made with 2:8:32 KiB chunks)."""
    data = (cmd_testdata / name).read_bytes()
    index = Index.from_bytes((cmd_testdata / f"{name}.caibx").read_bytes())
    assert vector_cuts(data, ChunkerParams(2048, 8192, 32768)) == index.ends.tolist()


def test_exact_min_boundary_is_cut() -> None:
    """chunking.md §9.3 on 16 MiB (several hashing blocks and block edges)."""
    data = random.Random(12345).randbytes(16 * 1024 * 1024)
    ends = vector_cuts(data, ChunkerParams(1024, 4096, 16384))
    assert len(ends) == 4129
    i = ends.index(11262974 + 1024)
    assert ends[i - 1:i + 3] == [11262974, 11263998, 11272102, 11277310]
    assert ends == find_cuts(data, ChunkerParams(1024, 4096, 16384)).tolist()


def test_window_hashes_match_the_definition() -> None:
    data = random.Random(3).randbytes(300)
    got = _vector.window_hashes(np.frombuffer(data, dtype=np.uint8)).tolist()
    assert len(got) == 300 - 47
    assert got == [_reference.window_hash(data[j:j + 48]) for j in range(300 - 47)]
    assert got[0] == _reference.window_hash(data[:48])


def test_long_zero_runs_and_block_edges() -> None:
    """Zero runs give max chunks; hits right at 64 KiB hashing-block edges count."""
    data = bytes(3 * _vector.BLOCK + 4321) + random.Random(4).randbytes(2 * _vector.BLOCK)
    for params in (ChunkerParams(48, 96, 200), DEFAULT_PARAMS, ChunkerParams(64, 64, 64)):
        assert vector_cuts(data, params) == _reference.find_cuts(data, params)


@st.composite
def inputs(draw: st.DrawFn) -> tuple[bytes, ChunkerParams, bool]:
    mn = draw(st.sampled_from([1, 2, 16, 47, 48, 49, 64, 100]))
    avg = mn + draw(st.sampled_from([0, 0, 1, 10, 100, 300]))
    mx = avg + draw(st.sampled_from([0, 0, 1, 5, 50, 400]))
    size = draw(st.integers(0, 6000))
    seed = draw(st.integers(0, 2**32))
    kind = draw(st.sampled_from(["random", "zeros", "periodic"]))
    if kind == "random":
        data = random.Random(seed).randbytes(size)
    elif kind == "zeros":
        data = bytes(size)
    else:
        data = (random.Random(seed).randbytes(7) * (size // 7 + 1))[:size]
    return data, ChunkerParams(mn, avg, mx), draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs())
def test_matches_the_reference_model(case: tuple[bytes, ChunkerParams, bool]) -> None:
    """Any sizes (max below the 48-byte window too), with and without end of stream."""
    data, params, eof = case
    assert vector_cuts(data, params, eof) == _reference.find_cuts(data, params, eof=eof)


def test_matches_the_compiled_kernel_on_a_large_input() -> None:
    data = np.frombuffer(random.Random(9).randbytes(24 * 1024 * 1024), dtype=np.uint8)
    for eof in (True, False):
        got = _vector.find_cuts(data, len(data), eof, DEFAULT_PARAMS)
        assert got.tolist() == find_cuts(data, DEFAULT_PARAMS, eof=eof).tolist()
