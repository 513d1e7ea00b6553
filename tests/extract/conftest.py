"""Fixtures of the extract tests: desync's vectors with real symlinks, loop-mounted
btrfs/XFS filesystems and loop block devices (both need root). The in-process CLI
(``cli``, ``ok``) comes from :mod:`desync_core.testing.fixtures` (root conftest)."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from extract_util import pseudo_symlink_tree, run


@pytest.fixture(scope="session")
def vectors(cmd_testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """desync's ``cmd/desync/testdata`` with its symlinks restored (read-only data)."""
    return pseudo_symlink_tree(cmd_testdata, tmp_path_factory.mktemp("vectors") / "testdata")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: loop mounts and loop devices cannot be set up otherwise")


#: Filesystems with reflinks: mkfs command and image size.
COW_FILESYSTEMS = {
    "btrfs": (["mkfs.btrfs", "-q"], 256 * 1024 * 1024),
    "xfs": (["mkfs.xfs", "-q", "-m", "reflink=1"], 512 * 1024 * 1024),
}


@pytest.fixture(scope="module", params=sorted(COW_FILESYSTEMS))
def cow_fs(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A freshly made btrfs or XFS filesystem, loop-mounted (unmounted afterwards)."""
    _need_root()
    fstype = request.param
    mkfs, size = COW_FILESYSTEMS[fstype]
    if shutil.which(mkfs[0]) is None:
        pytest.skip(f"{mkfs[0]} is not installed, cannot test reflinks on {fstype}")
    base = tmp_path_factory.mktemp(fstype)
    image = base / f"{fstype}.img"
    mnt = base / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(size)
    made = run(*mkfs, image, check=False)
    if made.returncode != 0:
        pytest.skip(f"{mkfs[0]} failed, cannot test reflinks on {fstype}: "
                    f"{made.stderr.strip()}")
    mounted = run("mount", "-o", "loop", image, mnt, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount a {fstype} image here, reflinks untestable: "
                    f"{mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        run("umount", mnt, check=False)
        with contextlib.suppress(OSError):
            image.unlink()


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Callable[[int, bytes], str]]:
    """``make(size, fill)`` attaches a loop device over a file of ``size`` bytes."""
    _need_root()
    attached: list[str] = []

    def make(size: int, fill: bytes = b"") -> str:
        backing = tmp_path / f"loop-{uuid.uuid4().hex[:8]}.img"
        with open(backing, "wb") as f:
            f.write(fill[:size])
            f.truncate(size)
        proc = run("losetup", "-f", "--show", backing, check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot attach a loop device here: {proc.stderr.strip()}")
        dev = proc.stdout.strip()
        attached.append(dev)
        return dev

    try:
        yield make
    finally:
        for dev in attached:
            run("losetup", "-d", dev, check=False)
