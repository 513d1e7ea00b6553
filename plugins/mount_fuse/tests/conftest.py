"""Fixtures for desync-mount-fuse's tests: real FUSE mounts run as ``desync mount-index``
subprocesses, always unmounted and stopped (by PID) at the end of the test."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from desync_core.testing.fixtures import casync, cmd_testdata, testdata  # noqa: F401

#: How long a mount may take to appear or a process to exit before the test fails.
PATIENCE = 30.0


def fuse_available() -> str | None:
    """Why FUSE mounts cannot work here (None: they can)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian package fuse3)"
    return None


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point (as ``mountpoint -q`` says)."""
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


class MountProcess:
    """One ``desync mount-index … INDEX MOUNTPOINT`` process.

    Attributes:
        proc: the process.
        mountpoint: where it mounts.
        stderr_path: its stderr.
    """

    def __init__(self, args: list[str], mountpoint: Path, stderr_path: Path,
                 stdin: bytes | None = None) -> None:
        self.mountpoint = mountpoint
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "desync_core", "mount-index", *args, str(mountpoint)],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._err)
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()

    @property
    def stderr(self) -> str:
        """What the process printed on stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def wait_mounted(self) -> MountProcess:
        """Wait for the mount (``mountpoint -q``); fail if the process dies first."""
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            if is_mounted(self.mountpoint):
                return self
            if self.proc.poll() is not None:
                pytest.fail(f"mount-index exited with {self.proc.returncode}: {self.stderr}")
            time.sleep(0.05)
        pytest.fail(f"{self.mountpoint} was not mounted within {PATIENCE} s: {self.stderr}")

    def wait_exit(self) -> int:
        """The exit code, waiting for it (fails the test after PATIENCE)."""
        try:
            return self.proc.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"mount-index did not exit: {self.stderr}")

    def cleanup(self) -> None:
        """Stop the process by PID and make sure nothing stays mounted."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)])
        self._err.close()


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., MountProcess]]:
    """``mount(*args, index)`` starts ``desync mount-index ARGS MOUNTPOINT`` on a fresh
    directory and waits for the mount (``wait=False``: don't); everything is unmounted
    and stopped at the end of the test."""
    reason = fuse_available()
    if reason:
        pytest.skip(reason)
    started: list[MountProcess] = []

    def start(*args: str | os.PathLike[str], stdin: bytes | None = None,
              wait: bool = True) -> MountProcess:
        n = len(started)
        mountpoint = tmp_path / f"mnt{n}"
        mountpoint.mkdir()
        m = MountProcess([str(a) for a in args], mountpoint, tmp_path / f"mount{n}.err",
                         stdin)
        started.append(m)
        return m.wait_mounted() if wait else m

    yield start
    for m in started:
        m.cleanup()


@pytest.fixture(scope="session")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(data, index, store)``: a 6 MiB blob (random, repeated and zero parts), its
    index and a local store with its chunks."""
    base = tmp_path_factory.mktemp("blob")
    rng = random.Random(15)
    part = rng.randbytes(1 << 20)
    data = rng.randbytes(3 << 20) + part + bytes(1 << 20) + part[: 1 << 19] + b"end"
    path = base / "image.bin"
    path.write_bytes(data)
    index, store = base / "image.bin.caibx", base / "store"
    subprocess.run([sys.executable, "-m", "desync_core", "make", "-s", str(store),
                    str(index), str(path)], check=True, capture_output=True, timeout=120)
    return path, index, store


def chunk_files(store: Path) -> list[Path]:
    """The chunk files of a local store."""
    return sorted(store.glob("*/*.cacnk"))
