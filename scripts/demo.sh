#!/usr/bin/env bash
# The main job on a local store, no server needed: chunk a file into a store, extract it
# back, and check the copy. Uses /usr/bin/python3's interpreter binary as sample input
# unless a file is given.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
INPUT="${1:-$(readlink -f "$(command -v python3)")}"
WORK="$(mktemp -d /var/tmp/desync-demo.XXXXXX)"
D=.venv/bin/desync
echo "chunking $INPUT into $WORK/store"
$D make --print-stats -s "$WORK/store" "$WORK/blob.caibx" "$INPUT"
$D info -s "$WORK/store" "$WORK/blob.caibx"
$D extract -s "$WORK/store" "$WORK/blob.caibx" "$WORK/blob.out"
cmp "$INPUT" "$WORK/blob.out"
echo "OK: $WORK/blob.out is identical to $INPUT"
