"""Every hook is documented in docs/plugin-hooks.md with its exact signature."""

from __future__ import annotations

import inspect
from pathlib import Path

from desync_core import hookspecs

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugin-hooks.md"


def test_every_hook_is_documented_with_its_signature() -> None:
    text = DOC.read_text()
    hooks = [name for name, fn in vars(hookspecs).items()
             if name.startswith("desync_") and inspect.isfunction(fn)]
    assert len(hooks) == 6
    for name in hooks:
        sig = inspect.signature(getattr(hookspecs, name))
        params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
        heading = f"### `{name}({params}) -> {sig.return_annotation}`"
        assert heading in text, f"undocumented or drifted hook: {heading}"
