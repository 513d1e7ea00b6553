"""SIGTERM while ``extract``/``cat`` are writing: exit 130, ``Error: interrupted``, and no
output or temporary file left behind.

To interrupt at a known point without timing, one chunk file of the store is a FIFO:
reading it blocks until the process is signalled. The test waits until the temporary
output file exists (the command is then mid-assembly) and sends SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desync_core.index import Index


@pytest.mark.parametrize("command", [["extract", "-n", "1"], ["extract", "-n", "4"], ["cat"]],
                         ids=["extract-n1", "extract-n4", "cat"])
def test_sigterm_leaves_nothing_behind(command: list[str], cmd_testdata: Path,
                                       tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(cmd_testdata / "blob1.store", store)
    index = Index.from_bytes((cmd_testdata / "blob1.caibx").read_bytes())
    null_id = index.digest.null_chunk_id(index.chunk_size_max)
    hex_id = next(c.id for c in list(index)[20:] if c.id != null_id).hex()  # fetched, not null
    chunk = store / hex_id[:4] / f"{hex_id}.cacnk"
    chunk.unlink()
    os.mkfifo(chunk)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "desync_core", *command, "-s", str(store),
         str(cmd_testdata / "blob1.caibx"), str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # only a safety net against a hang
        while not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the command never started writing: {proc.stderr.read()!r}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.decode().strip() == "Error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
