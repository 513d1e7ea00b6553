#!/usr/bin/env bash
# Set up a development/test environment on Debian (run as root):
#   system packages (casync, fuse3, sshd, btrfs/xfs tools, ...), a virtualenv in .venv,
#   and every package of this repository installed into it (core, plugins, example).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="casync fuse3 openssh-server btrfs-progs xfsprogs attr acl zstd python3-venv zsh fish"
# Each plugin names the Debian packages its tests need (servers, tools) in
# plugins/<name>/system-packages.txt: one per line, '#' comments.
for f in plugins/*/system-packages.txt; do
    [ -f "$f" ] && PACKAGES="$PACKAGES $(sed 's/#.*//' "$f" | tr '\n' ' ')"
done
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null
specs=(-e ".[testing]")
for d in plugins/*/ examples/*/; do
    # with the plugin's [testing] extra: the PyPI servers and clients its tests use
    [ -f "$d/pyproject.toml" ] && specs+=(-e "${d%/}[testing]")
done
$PIP install -q "${specs[@]}" -r requirements-test.txt
# Bytecode for the editable checkout: where PYTHONDONTWRITEBYTECODE is set (containers
# often set it), every `desync` process would otherwise compile its modules again.
.venv/bin/python -m compileall -q desync_core plugins examples >/dev/null
# Shell completion for bash users of this machine (generated from the installed parser).
if [ -d /etc/bash_completion.d ] && [ -w /etc/bash_completion.d ]; then
    .venv/bin/desync completion bash > /etc/bash_completion.d/desync 2>/dev/null || true
fi
