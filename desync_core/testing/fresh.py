"""A fresh installation of ``desync_core``, for the first-run tests and benchmark.

A copy of the package without any ``__pycache__`` (so without cached kernels), imported
through ``PYTHONPATH``, with an empty HOME and none of the variables that point the
kernels elsewhere: the kernels' cache is the copy's own ``__pycache__``, as for a package
installed by pip (``desync_core.kernelcache``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

import desync_core

#: The packages whose ``__pycache__`` holds compiled kernels.
KERNEL_PACKAGES = ("chunker", "batchhash")

# Each would make the copy use another kernel cache, or choose its kernels for it.
_KERNEL_VARIABLES = ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "DESYNC_CHUNKER_KERNEL",
                     "DESYNC_HASH_KERNEL", "DESYNC_KERNEL_BUILD")


class FreshInstall:
    """A fresh installation under ``root``: the package in ``root/site``, HOME
    ``root/home``; ``env`` is the environment that runs it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site"
        shutil.copytree(Path(desync_core.__file__).parent, self.site / "desync_core",
                        ignore=shutil.ignore_patterns("__pycache__"))
        self.home = root / "home"
        self.home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if k not in _KERNEL_VARIABLES}
        self.env.update(PYTHONPATH=str(self.site), HOME=str(self.home))

    def cache(self, package: str) -> Path:
        """The kernel cache of ``package`` (one of :data:`KERNEL_PACKAGES`)."""
        return self.site / "desync_core" / package / "__pycache__"

    def kernels(self) -> list[str]:
        """Names of the cached kernel files, sorted."""
        return sorted(p.name for package in KERNEL_PACKAGES
                      if self.cache(package).is_dir()
                      for p in self.cache(package).iterdir()
                      if p.name.startswith(("chunker-", "sha512x8-")))

    def builder_done(self, wanted: int) -> bool:
        """Whether ``wanted`` compiled kernels are cached and no build lock is held."""
        locks = [p for package in KERNEL_PACKAGES if self.cache(package).is_dir()
                 for p in self.cache(package).glob(".build-*.lock")]
        return len([k for k in self.kernels() if k.endswith(".so")]) >= wanted and \
            all(_unlocked(lock) for lock in locks)

    def wait_for_builder(self, wanted: int, timeout: float = 900) -> float:
        """Wait until the background builder is done (:meth:`builder_done`); the
        seconds waited. ``timeout`` only keeps a broken build from hanging: then
        :class:`TimeoutError`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.builder_done(wanted):
                return time.monotonic() - start
            time.sleep(0.2)
        raise TimeoutError(f"background build did not finish within {timeout} s: "
                           f"{self.kernels()}")


def _unlocked(path: Path) -> bool:
    # The builder holds the lock while it compiles; taking it without waiting tells.
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


__all__ = ["KERNEL_PACKAGES", "FreshInstall"]
