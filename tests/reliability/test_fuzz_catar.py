"""Fuzzing catar archives: decoding gives nodes or an ArchiveFormatError, and ``untar``
of any mutation succeeds or fails with one line and a documented exit code, writing
nothing outside its target (#19)."""

from __future__ import annotations

import io
import itertools
import os
import shutil
from pathlib import Path

import pytest
from fuzz_util import FUZZ, MEMORY_GROWTH_MB, check_cli_result, mutated, peak_rss_mb
from hypothesis import given
from hypothesis import strategies as st

from desync_core.archive.catar import CatarDecoder
from desync_core.errors import ArchiveFormatError

COUNTER = itertools.count()


def build_seed(base: Path) -> bytes:
    """A small tree with each kind of entry catar stores, archived by ``desync tar``."""
    from desync_core.cli import run

    src = base / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "file").write_bytes(b"hello world\n" * 20)
    (src / "empty").write_bytes(b"")
    (src / "sub" / "x").write_bytes(os.urandom(300))
    os.link(src / "file", src / "sub" / "hardlink")
    os.symlink("../file", src / "sub" / "link")
    os.mkfifo(src / "fifo")
    os.setxattr(src / "file", "user.k", b"v")
    os.chmod(src / "sub" / "x", 0o640)
    assert run(["tar", str(base / "seed.catar"), str(src)]) == 0
    return (base / "seed.catar").read_bytes()


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_seed(tmp_path_factory.mktemp("catar-seed"))


def test_catar_decoder(seed: bytes) -> None:
    @FUZZ
    @given(st.one_of(mutated(seed, max_edits=3), st.binary(max_size=200)))
    def run(data: bytes) -> None:
        try:
            for _node in CatarDecoder(io.BytesIO(data).read, name="fuzz").nodes():
                pass
        except ArchiveFormatError:
            pass

    run()


def test_untar_of_mutated_archives(tmp_path: Path, seed: bytes, cli) -> None:  # type: ignore[no-untyped-def]
    before = peak_rss_mb()

    @FUZZ
    @given(mutated(seed, max_edits=3))
    def run(data: bytes) -> None:
        case = tmp_path / f"case{next(COUNTER)}"
        case.mkdir()
        archive = tmp_path / "in.catar"
        archive.write_bytes(data)
        check_cli_result(cli("untar", archive, case / "out"))
        # Whatever happened, nothing was written beside the target.
        assert [p.name for p in case.iterdir()] in ([], ["out"])
        shutil.rmtree(case)

    run()
    assert peak_rss_mb() - before < MEMORY_GROWTH_MB
