"""What Linux's ``/proc`` says about a process, for tests that wait on one (its workers,
whether it is gone, where it blocks) by polling a state rather than a time."""

from __future__ import annotations

from pathlib import Path


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (none once it is gone)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold any byte.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wchan(pid: int) -> str:
    """The kernel function process ``pid`` sleeps in (``""`` once it is gone), e.g.
    ``fifo_open`` while it opens a FIFO that has no writer."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


__all__ = ["alive", "children_of", "wchan"]
