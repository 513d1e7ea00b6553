"""``desync --version`` and ``desync completion bash|zsh|fish`` (shtab, from the real parser)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import desync_core


def _complete_bash(script: Path, words: list[str]) -> list[str]:
    """What the generated bash completion offers for the command line ``words``."""
    line = " ".join(words)
    current = words[-1] or "''"
    cmd = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
           f"_shtab_desync desync {current} {words[-2]}; "
           'printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_is_valid_and_lists_every_command(tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    proc = desync("completion", "bash")
    assert proc.stderr == b""
    script = tmp_path / "desync.bash"
    script.write_bytes(proc.stdout)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr
    text = proc.stdout.decode()
    for command in ("make", "extract", "chunk-server", "prune", "completion"):
        assert command in text
    # the script really completes: command names, then that command's own flags
    assert _complete_bash(script, ["desync", "ma"]) == ["make", "manpage"]
    assert "chunk-server" in _complete_bash(script, ["desync", "chunk"])
    prune_flags = _complete_bash(script, ["desync", "prune", "--"])
    assert {"--store", "--yes", "--ignore-chunks", "--dry-run"} <= set(prune_flags)
    assert "--listen" in _complete_bash(script, ["desync", "chunk-server", "--l"])


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_list_every_command(shell: str, cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("completion", shell)
    assert result.code == 0, result.err
    text = result.out.decode()
    for command in ("make", "extract", "chunk-server", "mount-index"):
        assert command in text
    assert ("#compdef desync" in text) if shell == "zsh" else ("complete -c desync" in text)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_parse(shell: str, tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (only the syntax check needs it)")
    script = tmp_path / f"desync.{shell}"
    script.write_bytes(desync("completion", shell).stdout)
    check = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr


def test_completion_rejects_an_unknown_shell(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("completion", "powershell")
    assert result.code == 2
    assert result.err.startswith("Error: argument shell: invalid choice: 'powershell'")
    assert len(result.err.splitlines()) == 1


def test_version_lists_core_and_plugins(desync) -> None:  # type: ignore[no-untyped-def]
    proc = desync("--version")
    assert proc.returncode == 0
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == f"desync {desync_core.__version__}"
    assert lines[0] == f"desync {importlib.metadata.version('desync-core')}"
    http = importlib.metadata.version("desync-store-http")
    assert f"desync-store-http {http}" in lines[1:]
    assert len(lines) == len(set(lines))


def test_help_does_not_import_shtab() -> None:
    code = (
        "import sys\n"
        "from desync_core.cli import run\n"
        "try:\n"
        "    run(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('shtab' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stderr.strip() == "False"
    assert "completion" in proc.stdout
    assert "--version" in proc.stdout
