"""The chunking kernel against ``chunking.md``'s test vectors and the reference model."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_core.chunker import (
    DEFAULT_PARAMS,
    ChunkerParams,
    _reference,
    find_cuts,
    iter_chunks,
)
from desync_core.index import Index


def sha512_256(data: bytes | memoryview) -> bytes:
    return hashlib.new("sha512_256", data).digest()


def spans(ends: list[int]) -> list[tuple[int, int]]:
    """``(start, size)`` of each chunk."""
    out, prev = [], 0
    for end in ends:
        out.append((prev, end - prev))
        prev = end
    return out


# -- chunking.md §9 --------------------------------------------------------------------

def test_golden_chunker_input_matches_chunker_index(testdata: Path) -> None:
    """§9.1: boundaries and ids of ``chunker.input`` equal ``chunker.index``."""
    data = (testdata / "testdata" / "chunker.input").read_bytes()
    index = Index.from_bytes((testdata / "testdata" / "chunker.index").read_bytes())
    ends = find_cuts(data, DEFAULT_PARAMS)
    assert ends.tolist() == index.ends.tolist()
    assert len(ends) == 20
    assert spans(ends.tolist())[10] == (517857, 103873)
    ids = b"".join(sha512_256(data[a:a + n]) for a, n in spans(ends.tolist()))
    assert ids == index.ids


def test_exact_min_boundary_is_cut() -> None:
    """§9.3: casync cuts at exactly ``min`` (old desync did not)."""
    data = random.Random(12345).randbytes(16 * 1024 * 1024)
    assert hashlib.sha256(data).hexdigest() == \
        "0b83973c0d711397a17e97df3b72e97427c2403c9ee3f87b8496700868cf3f68"
    ends = find_cuts(data, ChunkerParams(1024, 4096, 16384)).tolist()
    assert len(ends) == 4129
    table = spans(ends)
    i = table.index((11262974, 1024))
    assert table[i - 1:i + 3] == [(11261621, 1353), (11262974, 1024), (11263998, 8104),
                                  (11272102, 5208)]
    assert sha512_256(data[11262974:11262974 + 1024]).hex() == \
        "acaf1974f8b3cc6b24fa574f27ca2dc3e98ecd4284019b352d017f50f9f484f4"


def test_discriminator_is_clamped_to_min(testdata: Path) -> None:
    """§9.4: with min > d(avg) casync uses d = min: 8 chunks, not desync's 12."""
    data = (testdata / "testdata" / "chunker.input").read_bytes()
    params = ChunkerParams(61440, 65536, 262144)
    assert params.discriminator == 61440
    ends = find_cuts(data, params).tolist()
    assert spans(ends) == [(0, 63983), (63983, 101162), (165145, 76828), (241973, 216690),
                           (458663, 147751), (606414, 173610), (780024, 103602),
                           (883626, 164950)]
    assert sha512_256(data[0:63983]).hex() == \
        "9d5e7629b44e4c73e2e792ca9503d7a5d0ad1bfc0807a6b1b865fb5c5a4b43ba"


@pytest.mark.parametrize("name", ["blob1", "blob2"])
def test_small_chunk_blobs_match_their_indexes(cmd_testdata: Path, name: str) -> None:
    """§9.2: 2048/8192/32768 reproduces desync's (and casync's) chunk tables."""
    data = (cmd_testdata / name).read_bytes()
    index = Index.from_bytes((cmd_testdata / f"{name}.caibx").read_bytes())
    params = ChunkerParams(2048, 8192, 32768)
    assert find_cuts(data, params).tolist() == index.ends.tolist()


def test_small_synthetic_cases() -> None:
    """§9.5: empty, tiny, zeros."""
    p = DEFAULT_PARAMS
    assert find_cuts(b"", p).tolist() == []
    assert find_cuts(bytes(range(16)), p).tolist() == [16]
    assert find_cuts(bytes(1 << 20), p).tolist() == [262144, 524288, 786432, 1048576]
    for n in (16384, 65536, 262144):
        assert find_cuts(bytes(n), p).tolist() == [n]
    null_id = sha512_256(bytes(262144)).hex()
    assert null_id.startswith("1c8109946feed9f9")


def test_zero_window_can_be_a_boundary() -> None:
    """A discriminator dividing 0x9e489e48 + 1 cuts zero runs (§6): d = 3943."""
    params = ChunkerParams(1000, 5251, 20000)
    assert params.discriminator == 3943
    assert not params.zero_runs_never_cut
    ends = find_cuts(bytes(100_000), params).tolist()
    assert ends == _reference.find_cuts(bytes(100_000), params)
    assert ends[0] == 1000  # every window of zeros is a boundary: cut at min


# -- kernel == reference -----------------------------------------------------------------

@st.composite
def params_strategy(draw: st.DrawFn) -> ChunkerParams:
    kind = draw(st.sampled_from(["general", "small_min", "fixed", "clamped"]))
    if kind == "fixed":
        size = draw(st.integers(1, 300))
        return ChunkerParams(size, size, size)
    # casync allows min < 48 (the first boundary test is then at 48 bytes).
    mn = draw(st.integers(1, 47) if kind == "small_min" else st.integers(48, 400))
    avg = draw(st.integers(mn, mn * 8))
    mx = draw(st.integers(avg, avg * 8))
    if kind == "clamped":
        avg = mn = max(mn, 200)
        mx = max(mx, mn)
    return ChunkerParams(mn, avg, mx)


@st.composite
def data_strategy(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "periodic", "mixed", "zeros"]))
    n = draw(st.integers(0, 6000))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    if kind == "random":
        return rnd.randbytes(n)
    if kind == "zeros":
        return bytes(n)
    if kind == "periodic":
        period = rnd.randbytes(draw(st.integers(1, 9)))
        return (period * (n // len(period) + 1))[:n]
    parts = [rnd.randbytes(n // 3), bytes(n // 4), b"ab" * (n // 6)]
    return b"".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=data_strategy(), params=params_strategy())
def test_kernel_equals_reference(data: bytes, params: ChunkerParams) -> None:
    assert find_cuts(data, params).tolist() == _reference.find_cuts(data, params)
    # Without eof the kernel never cuts what more data could change.
    assert find_cuts(data, params, eof=False).tolist() == \
        _reference.find_cuts(data, params, eof=False)


@settings(max_examples=100, deadline=None)
@given(data=data_strategy(), params=params_strategy(), block=st.integers(1, 5000))
def test_streaming_equals_one_shot(data: bytes, params: ChunkerParams, block: int) -> None:
    stream = io.BytesIO(data)
    got = [(off, bytes(chunk)) for off, chunk in iter_chunks(stream.readinto, params,
                                                                block_size=block)]
    ends = find_cuts(data, params).tolist()
    assert [(a, data[a:a + n]) for a, n in spans(ends)] == got


def test_streaming_short_reads_and_offset() -> None:
    data = random.Random(7).randbytes(300_000)
    params = ChunkerParams(64, 256, 1024)
    stream = io.BytesIO(data)

    def dribble(view: memoryview) -> int:
        return stream.readinto(view[:333])

    got = [(off, len(c)) for off, c in iter_chunks(dribble, params, offset=1000)]
    assert got == [(a + 1000, n) for a, n in spans(find_cuts(data, params).tolist())]


def test_find_cuts_accepts_arrays_and_length() -> None:
    data = random.Random(3).randbytes(50_000)
    params = ChunkerParams(64, 256, 1024)
    arr = np.frombuffer(data, dtype=np.uint8)
    assert find_cuts(arr, params).tolist() == find_cuts(data, params).tolist()
    assert find_cuts(bytearray(data), params, length=20_000).tolist() == \
        find_cuts(data[:20_000], params).tolist()
    strided = np.frombuffer(data * 2, dtype=np.uint8)[::2]  # non-contiguous: copied
    assert find_cuts(strided, params).tolist() == \
        find_cuts(bytes(strided), params).tolist()
    with pytest.raises(ValueError, match="outside the buffer"):
        find_cuts(data, params, length=len(data) + 1)
