"""No command writes its output over one of its own inputs.

A name comparison is not enough: ``./disk.img``, ``disk.img``, a hard link and a
symlink all name the same file. Files are compared by device and inode, after a
name comparison for outputs that do not exist yet (nothing to clash with then).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from desync_core.errors import UsageError


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def refuse_output_over_inputs(output: str | None, inputs: Iterable[str | None],
                              message: str = "input and output filenames match") -> None:
    """Raise :class:`UsageError` if ``output`` is the same file as any of ``inputs``.

    ``-`` (stdin/stdout), ``None`` and URLs (``scheme://``) are never local files and
    are skipped. ``message`` is the one-line error (desync's wording by default).
    """
    if not output or output == "-" or "://" in output:
        return
    out_id = _identity(output)
    out_abs = os.path.abspath(output)
    for candidate in inputs:
        if not candidate or candidate == "-" or "://" in candidate:
            continue
        if os.path.abspath(candidate) == out_abs:
            raise UsageError(message)
        if out_id is not None and _identity(candidate) == out_id:
            raise UsageError(f"{message} ({output} and {candidate} are the same file)")


__all__ = ["refuse_output_over_inputs"]
