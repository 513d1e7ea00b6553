"""Helpers of the reliability suite: run the real program with its peak memory measured."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BoundedRun:
    """One subprocess run: exit code, stderr text and peak resident memory."""

    code: int
    err: str
    max_rss_mb: float

    def one_line_error(self, code: int, *fragments: str) -> str:
        """Assert a one-line ``Error:`` with ``code`` (no traceback); returns the line."""
        assert "Traceback" not in self.err, self.err
        assert self.code == code, self.err
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("Error: "), self.err
        for fragment in fragments:
            assert fragment in lines[0], self.err
        return lines[0]


def run_measured(*args: str | os.PathLike[str], stdin: Path | int | None = None,
                 timeout: float = 120, cwd: Path | None = None) -> BoundedRun:
    """Run ``python -m desync_core ARGS``; its peak RSS comes from wait4's rusage.

    ``stdin`` is a file to read or a file descriptor. The run is killed after
    ``timeout`` seconds (the test then fails on the exit code, never hangs).
    """
    err_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"desync-rel-{os.getpid()}-{id(args)}"
    in_file = open(stdin, "rb") if isinstance(stdin, Path) else None  # noqa: SIM115
    try:
        with open(err_path, "w+b") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "desync_core", *map(str, args)],
                stdin=in_file if in_file is not None else
                (stdin if stdin is not None else subprocess.DEVNULL),
                stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
            killer = threading.Timer(timeout, proc.kill)
            killer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
            err.seek(0)
            text = err.read().decode(errors="replace")
    finally:
        if in_file is not None:
            in_file.close()
        err_path.unlink(missing_ok=True)
    return BoundedRun(proc.returncode, text, usage.ru_maxrss / 1024)


__all__ = ["BoundedRun", "run_measured"]
