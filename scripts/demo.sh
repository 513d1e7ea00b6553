#!/usr/bin/env bash
# The main job on a local store, no server needed (run as root on Debian):
#   1. chunk an image into a store and write its index,
#   2. extract it back from the store and check the copy,
#   3. make a second version of the image and extract it using the first as a seed:
#      only the changed chunks come from the store (what A/B updates rely on).
# The image is built from system files (64 MiB), or give your own file as $1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
D="$PWD/.venv/bin/desync"
WORK="$(mktemp -d /var/tmp/desync-demo.XXXXXX)"
cd "$WORK"

if [ $# -ge 1 ]; then
    cp -- "$1" image-v1
else
    # A sample "disk image": the first 64 MiB of a tar of shared libraries.
    tar -cf - -C /usr lib 2>/dev/null | head -c $((64 << 20)) > image-v1 || true
fi
echo "== 1. make: chunk image-v1 ($(stat -c %s image-v1) bytes) into ./store"
"$D" make --print-stats -s store image-v1.caibx image-v1
"$D" info -s store image-v1.caibx

echo "== 2. extract it back and compare"
"$D" extract -s store image-v1.caibx copy
cmp image-v1 copy && echo "OK: copy is identical to image-v1"

echo "== 3. version 2: change 1 MiB in the middle, extract it with v1 as the seed"
cp image-v1 image-v2
dd if=/dev/urandom of=image-v2 bs=1M count=1 seek=20 conv=notrunc status=none
"$D" make -s store image-v2.caibx image-v2
"$D" extract --print-stats --seed image-v1.caibx -s store image-v2.caibx image-v2.out
cmp image-v2 image-v2.out && echo "OK: image-v2 rebuilt; see chunks-from-seeds vs chunks-from-store above"
echo "Files are in $WORK"
