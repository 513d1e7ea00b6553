"""Fixtures of the reliability suite (issue 19): fuzzing, hostile inputs, full and
read-only disks, kill -9 crash safety. The shared ``cli``/``ok``/``desync`` fixtures
come from the root conftest."""

from __future__ import annotations
