"""Seeds for ``extract``: data already on this machine that matches parts of an index."""

from __future__ import annotations

from typing import Any


def build_planner(ctx: Any, index: Any, args: Any) -> Any:
    """Placeholder until seeds land."""
    from desync_core.errors import UsageError

    raise UsageError("seeds are not implemented yet")
