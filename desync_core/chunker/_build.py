"""``python -m desync_core.chunker._build``: compile and cache every kernel, then exit.

The ``desync`` command starts this detached, after it has done a small job without
the compiled kernels (see :mod:`desync_core.kernelcache`), so that later runs find
them cached. It runs at low priority; a kernel that another process is compiling at
the moment is left to that process. Failures are silent: kernels that cannot be built
here are simply not cached, and commands keep using numpy and hashlib.
"""

from __future__ import annotations

import os


def main() -> int:
    """Build the chunker's and the hash kernel's caches (each unless already cached)."""
    try:
        os.nice(10)  # for next time: never compete with the user's foreground work
    except OSError:
        pass
    # Foreground mode inside this process: compile what is missing, start no builder.
    os.environ["DESYNC_KERNEL_BUILD"] = "foreground"
    from desync_core.chunker import _native

    _native.build_if_missing()
    from desync_core import batchhash

    batchhash.build_if_missing()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
