"""The documented Python API does what the CLI does."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from desync_core import api
from desync_core.chunker import ChunkerParams


def test_make_extract_cat_round_trip(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    data = os.urandom(700_000) + bytes(300_000) + os.urandom(123)
    blob.write_bytes(data)
    store = str(tmp_path / "store")
    index = api.make(str(blob), str(tmp_path / "b.caibx"), store=store, chunk_size="2:8:32")
    assert index.length == len(data)
    assert api.read_index(str(tmp_path / "b.caibx")).to_bytes() == index.to_bytes()
    stats = api.extract(str(tmp_path / "b.caibx"), str(tmp_path / "out"), stores=[store])
    assert (tmp_path / "out").read_bytes() == data
    assert stats.chunks_total == len(index)
    out = io.BytesIO()
    assert api.cat(index, out, stores=[store], offset=10, length=1000) == 1000
    assert out.getvalue() == data[10:1010]
    reader = api.open_store(store)
    first = index.chunk(0)
    assert bytes(reader.get_chunk(first.id).data()) == data[: first.size]
    reader.close()


def test_chunk_boundaries_match_golden_vector(testdata: Path) -> None:
    data = (testdata / "testdata" / "chunker.input").read_bytes()
    ends = api.chunk_boundaries(data, ChunkerParams())
    assert ends[:3] == [81590, 128386, 164929]
    assert ends[-1] == len(data)
    assert len(ends) == 20


def test_extract_with_a_seed(tmp_path: Path) -> None:
    """A seed provides every chunk: nothing is needed from the (empty) store."""
    old = tmp_path / "old.img"
    new = tmp_path / "new.img"
    data = os.urandom(600_000)
    old.write_bytes(data)
    new.write_bytes(data[:300_000] + b"changed" + data[300_007:])
    api.make(str(old), str(tmp_path / "old.img.caibx"), chunk_size="2:8:32")
    api.make(str(new), str(tmp_path / "new.caibx"), store=str(tmp_path / "store"),
             chunk_size="2:8:32")
    stats = api.extract(str(tmp_path / "new.caibx"), str(tmp_path / "out"),
                        stores=[str(tmp_path / "store")],
                        seeds=[str(tmp_path / "old.img.caibx")])
    assert (tmp_path / "out").read_bytes() == new.read_bytes()
    assert stats.chunks_from_seeds > 0
    assert stats.chunks_from_store < stats.chunks_total


def test_api_refuses_output_over_input(tmp_path: Path) -> None:
    from desync_core.errors import UsageError

    blob = tmp_path / "disk.img"
    blob.write_bytes(b"x" * 100_000)
    with pytest.raises(UsageError, match="input and output filenames match"):
        api.make(str(blob), str(blob))
    assert blob.read_bytes() == b"x" * 100_000
