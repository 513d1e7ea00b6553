#!/bin/sh
# Encrypted stores written by desync (Go) read by us and the other way round, for both
# algorithms: make with one tool, extract (and verify) with the other, compare bytes.
# desync (Go) is not part of the test suite (it cannot be built on a fresh machine
# without its source); build it with benchmarks/build_desync_go.sh and run:
#   scripts/interop-desync-go.sh /path/to/desync-go
set -eu
GO=${1:-${DESYNC_GO:?give the desync (Go) binary as argument or in DESYNC_GO}}
PY=${PY_DESYNC:-$(dirname "$0")/../.venv/bin/desync}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
head -c 3000000 /dev/urandom > "$W/part"
cat "$W/part" "$W/part" > "$W/blob"          # repeated data: repeated chunks
KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
for alg in xchacha20-poly1305 aes-256-gcm; do
    mkdir -p "$W/home-$alg/.config/desync" "$W/go-$alg" "$W/py-$alg"
    opts="{\"encryption\": true, \"encryption-algorithm\": \"$alg\", \"encryption-key\": \"$KEY\"}"
    printf '{"store-options": {"%s": %s, "%s": %s}}\n' "$W/go-$alg" "$opts" "$W/py-$alg" "$opts" \
        > "$W/home-$alg/.config/desync/config.json"
    export HOME="$W/home-$alg"
    "$GO" make -s "$W/go-$alg" "$W/go.caibx" "$W/blob"
    "$PY" extract -s "$W/go-$alg" "$W/go.caibx" "$W/out-py"
    "$PY" verify -s "$W/go-$alg"
    cmp "$W/blob" "$W/out-py"
    "$PY" make -s "$W/py-$alg" "$W/py.caibx" "$W/blob"
    "$GO" extract -s "$W/py-$alg" "$W/py.caibx" "$W/out-go"
    cmp "$W/blob" "$W/out-go"
    # the same chunk file names (extension with the key id) in both stores
    [ "$(cd "$W/go-$alg" && find . -type f | sort)" = "$(cd "$W/py-$alg" && find . -type f | sort)" ]
    echo "$alg: desync (Go) <-> desync (Python) OK ($(find "$W/py-$alg" -type f | head -1 | sed 's/.*\.cacnk/.cacnk/'))"
    rm -f "$W/out-py" "$W/out-go"
done
