"""Shared set-up and helpers of the benchmark scripts."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path


def compile_bytecode() -> None:
    """Write the ``.pyc`` files of desync and its plugins before anything is timed.

    An installed package has them (pip compiles at install time); an editable checkout
    may not, and with ``PYTHONDONTWRITEBYTECODE`` set (common in containers) every run
    would compile the changed modules again, which is start-up time no user pays.
    """
    dirs = []
    for name in ("desync_core", "desync_store_http", "desync_format_tar", "desync_store_s3",
                 "desync_store_gcs", "desync_store_sftp", "desync_store_ssh",
                 "desync_store_oci", "desync_mount_fuse"):
        spec = find_spec(name)
        if spec is not None and spec.origin:
            dirs.append(str(Path(spec.origin).parent))
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True,
                   stdout=subprocess.DEVNULL)


def sha256(path: Path) -> str:
    """SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def make_blob(path: Path, size: int) -> str:
    """Half incompressible, half repetitive data (realistic compression); its SHA-256."""
    rng = random.Random(1)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        written = 0
        while written < size:
            block = rng.randbytes(1 << 20)
            if (written >> 20) % 2:
                block = (b"desync benchmark line %d\n" % (written >> 20)) * 40000
                block = block[: 1 << 20]
            block = block[: size - written]
            f.write(block)
            digest.update(block)
            written += len(block)
    return digest.hexdigest()


def start_server(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A chunk server over ``store`` on a free port; returns the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "desync_core", "chunk-server", "-s", str(store),
         "-l", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    m = re.match(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"chunk-server did not start: {line}{proc.stderr.read().decode()}")
    return proc, m.group(1)
