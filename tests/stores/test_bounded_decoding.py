"""Decompression bombs cost bounded memory (issue 19, item 4, the reading side).

A hostile chunk file of a few KB can inflate to 100+ MiB. Readers that have an index
stop decoding at the index's largest chunk; ``verify`` (no index) hashes the decoded
data piece by piece. Measured as the peak resident size (VmHWM) of a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desync_core import zstd

#: Runs a desync command in a child and prints its exit status and peak RSS (KiB).
RUN_AND_MEASURE = """
import sys
from desync_core.cli import run
code = run(sys.argv[1:])
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(code, peak_kb)
"""

#: Each bomb decodes to this much (below casync's 128 MiB limit: "valid" sizes).
BOMB_SIZE = 100 << 20


def measure(*args: str | Path) -> tuple[int, int, str]:
    """(exit code, peak RSS in MiB, stderr) of a desync command in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", RUN_AND_MEASURE, *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    code, peak_kb = map(int, proc.stdout.split()[-2:])
    return code, peak_kb // 1024, proc.stderr


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return zstd.compress(bytes(BOMB_SIZE))  # ~3 KiB


def plant(store: Path, chunk_id: bytes, data: bytes) -> None:
    h = chunk_id.hex()
    (store / h[:4]).mkdir(parents=True, exist_ok=True)
    (store / h[:4] / f"{h}.cacnk").write_bytes(data)


@pytest.fixture
def bombed_store(tmp_path: Path, bomb: bytes, ok) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A store made from a blob, every chunk file then replaced by a bomb."""
    (tmp_path / "blob").write_bytes(os.urandom(2 << 20))
    store, index = tmp_path / "store", tmp_path / "blob.caibx"
    ok("make", "-s", store, index, tmp_path / "blob")
    for path in store.rglob("*.cacnk"):
        path.write_bytes(bomb)
    return store, index


@pytest.mark.parametrize("command", ["cat", "cache", "untar"])
def test_readers_with_an_index_stop_at_its_largest_chunk(bombed_store, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         command: str) -> None:
    store, index = bombed_store
    args: list[str | Path] = {
        "cat": ["cat", "-n", "10", "-s", store, index, tmp_path / "out"],
        "cache": ["cache", "-n", "10", "-s", store, "-c", tmp_path / "cache", index],
        "untar": ["untar", "-i", "-n", "10", "-s", store, index, tmp_path / "tree"],
    }[command]
    code, peak_mib, err = measure(*args)
    assert code == 5, err
    assert "invalid chunk" in err
    assert "decompresses to more than" in err
    assert peak_mib < 250, f"{command} peaked at {peak_mib} MiB"
    assert not (tmp_path / "out").exists()


def test_verify_hashes_bombs_in_bounded_memory(tmp_path: Path, bomb: bytes) -> None:
    """Ten 100 MiB bombs under made-up ids, verified by 10 workers: each is reported
    (its hash is not its id) without ever holding one decoded."""
    store = tmp_path / "store"
    for k in range(10):
        plant(store, bytes([k]) * 32, bomb)
    code, peak_mib, err = measure("verify", "-n", "10", "-s", store)
    assert code == 5, err
    assert err.count("does not match its hash") == 10, err
    assert peak_mib < 250, f"verify peaked at {peak_mib} MiB"


def test_a_valid_large_chunk_still_verifies(tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    """The bounds never reject a valid chunk: a 3 MiB chunk (fixed-size chunking) is
    read back, cached and verified."""
    data = os.urandom(3 << 20)
    (tmp_path / "blob").write_bytes(data)
    store, index = tmp_path / "store", tmp_path / "x.caibx"
    ok("make", "-m", "3072:3072:3072", "-s", store, index, tmp_path / "blob")
    ok("verify", "-s", store)
    assert ok("cat", "-s", store, index).out == data
    ok("cache", "-s", store, "-c", tmp_path / "cache", index)
    ok("verify", "-s", tmp_path / "cache")
