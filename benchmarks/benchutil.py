"""Shared set-up of the benchmark scripts."""

from __future__ import annotations

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
    for name in ("desync_core", "desync_store_http", "desync_format_tar"):
        spec = find_spec(name)
        if spec is not None and spec.origin:
            dirs.append(str(Path(spec.origin).parent))
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True,
                   stdout=subprocess.DEVNULL)
