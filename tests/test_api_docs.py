"""Every Python block of ``docs/python-api.md`` runs, in order, in one empty directory.

The blocks form one session (later ones use what earlier ones made), as a reader would
type them; each asserts what it shows. A block that fails is named by its number and
first line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from desync_core import api

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def code_blocks(text: str) -> list[str]:
    """The ```` ```python ```` blocks of a Markdown text, in order."""
    return [m.group(1) for m in _BLOCK.finditer(text)]


def test_every_block_of_the_guide_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = code_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    monkeypatch.chdir(tmp_path)
    # No user configuration may change what the examples do.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DESYNC_HTTP_AUTH", raising=False)
    namespace: dict[str, object] = {"__name__": "__doc_example__"}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"{DOC.name} block {number}", "exec"), namespace)
        except Exception as exc:
            first = block.strip().splitlines()[0]
            raise AssertionError(f"block {number} ({first!r}) failed: {exc!r}") from exc
    printed = capsys.readouterr().out
    assert "#mtree v1.0" in printed
    assert "no source store provided" in printed


def test_the_guide_shows_every_command() -> None:
    """Each call of the API's command table has an example on the page."""
    text = DOC.read_text(encoding="utf-8")
    code = "\n".join(code_blocks(text))
    calls = ["make", "extract", "cat", "chop", "cache", "info", "inspect_chunks", "verify",
             "verify_index", "prune", "tar", "untar", "mtree", "chunk_server", "index_server",
             "read_index", "write_index"]
    missing = [c for c in calls if f"api.{c}(" not in code]
    assert missing == []
    assert all(callable(getattr(api, c)) for c in calls)


def test_code_blocks_are_found() -> None:
    text = "x\n```python\na = 1\n```\n```sh\nls\n```\n```python\nb = 2\n```\n"
    assert code_blocks(text) == ["a = 1\n", "b = 2\n"]
    assert os.path.isfile(DOC)
