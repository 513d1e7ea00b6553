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


#: Runs the CLI like ``python -m desync_core``, then writes the process's own peak RSS
#: (VmHWM, in KiB) to the file named by the first argument. wait4's ru_maxrss would not
#: do: Linux carries the parent's (pytest's) resident size into the child across
#: vfork + exec, so it grows with whatever pytest holds at the moment.
_MEASURED_MAIN = """
import sys
from desync_core.cli import run
try:
    code = run(sys.argv[2:])
finally:
    with open("/proc/self/status") as status, open(sys.argv[1], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
sys.exit(code)
"""


def run_measured(*args: str | os.PathLike[str], stdin: Path | int | None = None,
                 timeout: float = 120, cwd: Path | None = None) -> BoundedRun:
    """Run the CLI (as ``python -m desync_core ARGS`` does); its peak RSS is VmHWM.

    ``stdin`` is a file to read or a file descriptor. The run is killed after
    ``timeout`` seconds (the test then fails on the exit code, never hangs).
    """
    err_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"desync-rel-{os.getpid()}-{id(args)}"
    hwm_path = err_path.with_suffix(".hwm")
    in_file = open(stdin, "rb") if isinstance(stdin, Path) else None  # noqa: SIM115
    try:
        with open(err_path, "w+b") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", _MEASURED_MAIN, str(hwm_path), *map(str, args)],
                stdin=in_file if in_file is not None else
                (stdin if stdin is not None else subprocess.DEVNULL),
                stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
            killer = threading.Timer(timeout, proc.kill)
            killer.start()
            try:
                proc.wait()
            finally:
                killer.cancel()
            err.seek(0)
            text = err.read().decode(errors="replace")
    finally:
        if in_file is not None:
            in_file.close()
        err_path.unlink(missing_ok=True)
    try:
        peak_kib = int(hwm_path.read_text())
    except (OSError, ValueError):
        peak_kib = 1 << 30  # killed before it could say: fails any bound
    finally:
        hwm_path.unlink(missing_ok=True)
    return BoundedRun(proc.returncode, text, peak_kib / 1024)


__all__ = ["BoundedRun", "run_measured"]
