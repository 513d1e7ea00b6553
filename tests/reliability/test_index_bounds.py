"""Index arguments are read header first and bounded by what it allows (#19.3).

A 200 MB blob given as an index used to cost 229 MB before "not an index file";
``desync info /dev/zero`` grew to 24 GB and was killed.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from pathlib import Path

import pytest
from reliability_util import run_measured

from desync_core.errors import IndexFormatError
from desync_core.index import Index, read_index_stream

#: Peak memory allowed to a command that rejects a huge input (the interpreter,
#: numpy and the plugins take ~40-60 MB).
MEMORY_BOUND_MB = 150


def valid_index(chunks: int = 3, cmax: int = 4096) -> bytes:
    ends = [1000 * (i + 1) for i in range(chunks)]
    ids = b"".join(bytes([i]) * 32 for i in range(chunks))
    from desync_core.chunker import ChunkerParams
    from desync_core.flags import BLOB_INDEX_FLAGS

    return Index.from_chunks(ends, ids, ChunkerParams(64, 1024, cmax), BLOB_INDEX_FLAGS).to_bytes()


def test_dev_zero_as_index_fails_at_once() -> None:
    run = run_measured("info", "/dev/zero", timeout=60)
    run.one_line_error(6, "/dev/zero: not an index file (bad header)")
    assert run.max_rss_mb < MEMORY_BOUND_MB


def test_big_blob_as_index_fails_with_small_memory(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    with open(blob, "wb") as f:  # 200 MB, sparse: no disk used
        f.truncate(200_000_000)
    for args, stdin in ((("info", blob), None), (("list-chunks", "-"), blob)):
        run = run_measured(*args, stdin=stdin, timeout=60)
        run.one_line_error(6, "not an index file (bad header)")
        assert run.max_rss_mb < MEMORY_BOUND_MB


def test_valid_header_then_garbage_stops_at_the_first_bad_item(tmp_path: Path) -> None:
    head = valid_index()[:64]
    big = tmp_path / "big.caibx"
    with open(big, "wb") as f:
        f.write(head + os.urandom(80))
        f.truncate(104 + 40 * 5_000_000)  # a plausible size: the table is read
    run = run_measured("info", big, timeout=60)
    run.one_line_error(6, "big.caibx")
    assert run.max_rss_mb < MEMORY_BOUND_MB


def test_wrong_size_file_fails_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "x.caibx"
    with open(path, "wb") as f:
        f.write(valid_index()[:64])
        f.truncate(200_000_001)
    run = run_measured("info", path, timeout=60)
    run.one_line_error(6, "truncated or padded index file (200000001 bytes")
    assert run.max_rss_mb < MEMORY_BOUND_MB


def test_endless_fifo_after_a_valid_tail_fails(tmp_path: Path) -> None:
    """A valid index followed by zeros for ever, through a FIFO."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        try:
            with open(fifo, "wb") as f:
                f.write(valid_index())
                while True:
                    f.write(bytes(1 << 20))
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    run = run_measured("info", fifo, timeout=60)
    writer.join(timeout=30)
    run.one_line_error(6, "unexpected data after the table tail")
    assert run.max_rss_mb < MEMORY_BOUND_MB


def test_stream_limit_and_item_checks() -> None:
    good = valid_index(chunks=50)
    assert read_index_stream(io.BytesIO(good), "s") == good
    assert len(Index.from_bytes(read_index_stream(io.BytesIO(good), "s"))) == 50
    with pytest.raises(IndexFormatError, match="larger than the 1000-byte limit"):
        read_index_stream(io.BytesIO(good), "s", limit=1000)
    with pytest.raises(IndexFormatError, match="larger than the 1000-byte limit"):
        read_index_stream(io.BytesIO(good), "s", size=len(good), limit=1000)
    # An item larger than the header's maximum, or going backwards, is caught as read.
    bad_size = bytearray(good)
    struct.pack_into("<Q", bad_size, 64 + 49 * 40, 49_000 + 5000)  # the last item
    with pytest.raises(IndexFormatError, match="chunk size 5000 is larger than maximum 4096"):
        read_index_stream(io.BytesIO(bytes(bad_size)), "s")
    backwards = bytearray(good)
    struct.pack_into("<Q", backwards, 64 + 80, 1500)
    with pytest.raises(IndexFormatError, match="not strictly increasing"):
        read_index_stream(io.BytesIO(bytes(backwards)), "s")
    for cut in (0, 10, 48, 63):
        with pytest.raises(IndexFormatError):
            read_index_stream(io.BytesIO(good[:cut]), "s")


def test_index_on_stdin_still_works(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    data = valid_index(chunks=4)
    result = cli("list-chunks", "-", input=data)
    assert result.code == 0, result.err
    assert len(result.text.split()) == 4
