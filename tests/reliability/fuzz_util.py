"""Hypothesis helpers of the fuzzing tests: mutated copies of valid inputs, and the
property every CLI run must have (success, or one ``Error:`` line with a documented
exit code)."""

from __future__ import annotations

import resource
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from desync_core.errors import BUG_EXIT_CODE

#: Each property test stays within a few seconds (the suite's time budget).
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
#: Exit codes of errors.py: 1 generic, 2 usage, 3 plugin, 4 store, 5 integrity, 6 format.
DOCUMENTED_CODES = {0, 1, 2, 3, 4, 5, 6}
#: How much the test process's peak memory may grow during one property test.
MEMORY_GROWTH_MB = 300


@st.composite
def mutated(draw: Any, seed: bytes, max_edits: int = 4) -> bytes:
    """``seed`` with a few edits: byte flips, overwrites with interesting values,
    insertions, deletions, truncation or appended garbage."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append",
                                     "word"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        elif kind == "word" and len(data) >= 8:
            at = draw(st.integers(0, len(data) - 8)) & ~7
            data[at:at + 8] = draw(st.sampled_from([
                b"\xff" * 8, b"\x00" * 8, (1 << 63).to_bytes(8, "little"),
                (2 ** 40).to_bytes(8, "little"), (64).to_bytes(8, "little")]))
    return bytes(data)


def check_cli_result(result: Any, allowed: set[int] | None = None) -> None:
    """The property: a documented exit code, no traceback, and on failure exactly one
    ``Error:`` line (possibly after warnings)."""
    assert result.code != BUG_EXIT_CODE, result.err
    assert "Traceback" not in result.err, result.err
    assert result.code in (allowed or DOCUMENTED_CODES), result.err
    if result.code:
        errors = [line for line in result.err.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, result.err
        assert result.err.rstrip("\n").splitlines()[-1] == errors[0], result.err


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


__all__ = ["DOCUMENTED_CODES", "FUZZ", "MEMORY_GROWTH_MB", "check_cli_result", "mutated",
           "peak_rss_mb"]
