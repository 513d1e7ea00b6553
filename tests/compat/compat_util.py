"""Shared helpers of the casync compatibility tests (data generators, casync runner)."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

KiB = 1024
MiB = 1024 * 1024


def random_bytes(seed: int, size: int) -> bytes:
    """Deterministic pseudo-random data."""
    return random.Random(seed).randbytes(size)


def text_bytes(seed: int, size: int) -> bytes:
    """Deterministic, compressible text-like data (zstd emits real compressed blocks)."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnop") for _ in range(rng.randint(2, 9)))
             for _ in range(400)]
    out = b" ".join(rng.choices(words, k=size // 4 + 1))
    return out[:size]


def kib_to_bytes(spec: str) -> str:
    """``16:64:256`` (desync, KiB) -> ``16384:65536:262144`` (casync, bytes)."""
    return ":".join(str(int(v) * KiB) for v in spec.split(":"))


def store_files(store: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every chunk file in a store directory."""
    out: dict[str, bytes] = {}
    if not store.exists():
        return out
    for path in sorted(store.rglob("*")):
        if path.is_file():
            out[path.relative_to(store).as_posix()] = path.read_bytes()
    return out


class Casync:
    """Runs Debian's casync binary."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def __call__(self, *args: str | os.PathLike[str], input: bytes | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([self.binary, *map(str, args)], input=input,
                              capture_output=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"casync {' '.join(map(str, args))} failed "
                                 f"({proc.returncode}): {proc.stderr.decode(errors='replace')}")
        return proc

    def make(self, index: Path, source: Path, store: Path | None = None,
             chunk_size: str | None = None, digest: str | None = None) -> bytes:
        """``casync make``; returns the index bytes. ``chunk_size`` is in KiB."""
        args: list[str | os.PathLike[str]] = []
        if digest:
            args.append(f"--digest={digest}")
        args.append("make")
        if store is not None:
            args.append(f"--store={store}")
        if chunk_size:
            args.append(f"--chunk-size={kib_to_bytes(chunk_size)}")
        self(*args, index, source)
        return index.read_bytes()

    def extract(self, index: Path, output: Path, store: Path) -> bytes:
        """``casync extract``; returns the output's bytes."""
        self("extract", f"--store={store}", index, output)
        return output.read_bytes()
