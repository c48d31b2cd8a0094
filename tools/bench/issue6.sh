#!/usr/bin/env bash
# Issue 6's measurements in one call on a GPU machine: builds (scripts/device_build.sh, GPU tests
# included), then `asa bench attn` (Setting A's N layer at each T with the per-op breakdown, decoding at
# the largest T for N, G and F, Setting B's G layer at selection_share 4 and 1, full and window attention) and
# tools/bench/peer_attn.py (PyTorch SDPA and fla's NSA) in the same run, so that the ratios compare like
# with like. Every asa run has its own time limit; a run cut off says so and the rest go on.
# Usage, from the repository root (with .deps from scripts/device_deps.sh and a copy of fla in .fla-full,
# see tools/bench/README.md): bash tools/bench/issue6.sh [T,T,...]   (default 8192,16384,32768,65536)
# PRECISION=bf16|tf32|fp32 (default bf16) picks asa's mode. Logs: $OUT (or /tmp/issue6) gets build.txt, asa.txt
# and peer.txt.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
SEQS=${1:-8192,16384,32768,65536}
LOG=${OUT:-/tmp/issue6}
mkdir -p "$LOG"
start=$(date +%s)
clock() { echo "[$(($(date +%s) - start)) s] $*"; }

SKIP_CPU_TESTS=1 bash scripts/device_build.sh >"$LOG/build.txt" 2>&1
build_rc=$?
tail -12 "$LOG/build.txt"
[[ -x build-device/asa ]] || { echo "issue6: no build-device/asa (build log: $LOG/build.txt)"; exit 1; }
((build_rc == 0)) || echo "issue6: device_build.sh exited $build_rc (a GPU test failed?); measuring anyway"
# shellcheck source=/dev/null
source /tmp/deps/env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader

# attn LIMIT ARGS...: one `asa bench attn` run on the GPU in $PRECISION (default bf16: bf16 tensors and
# bf16 tensor-core kernels, bf16 gemm ceiling; tf32: TF32 tensor-core kernels on fp32 tensors; fp32:
# CUDA-core kernels, whose ceiling is cuBLASLt's fp32 gemm rate), at most LIMIT seconds.
PRECISION=${PRECISION:-bf16}
attn() {
    local limit=$1
    shift
    clock "asa bench attn $*"
    timeout "$limit" build-device/asa bench attn --device cuda --precision "$PRECISION" "$@" 2>&1
    local rc=$?
    ((rc == 0)) || echo "(exit $rc$( ((rc == 124)) && echo ": cut off after $limit s"))"
}

IFS=, read -r -a ts <<<"$SEQS"
{
    attn 90 --seq "${ts[0]}" --repeats 3 --breakdown
} | tee "$LOG/asa.txt"
clock "peer_attn.py --seq $SEQS"
PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore timeout 300 python3 tools/bench/peer_attn.py --seq "$SEQS" --fla .fla-full 2>&1 |
    tee "$LOG/peer.txt"
{
    for t in "${ts[@]:1}"; do attn 150 --seq "$t" --repeats 3 --breakdown; done
    last=${ts[${#ts[@]} - 1]}
    attn 40 --decode --seq "$last" --breakdown
    attn 40 --decode --seq "$last" --kind G --rope-dim 64 --breakdown
    attn 40 --decode --seq "$last" --kind F --breakdown
    # Setting B: the G layer of asa-340M (16 heads, 2 latent groups of 128, RoPE key 32), R 4 against R 1
    for t in 8192 32768; do
        for r in 4 1; do
            attn 60 --kind G --seq "$t" --heads 16 --kv-heads 2 --head-dim 128 --rope-dim 32 --selection-share "$r" \
                --repeats 3 --breakdown
        done
    done
    attn 90 --kind F --seq "${ts[0]}" --repeats 3
    attn 60 --kind W --seq "${ts[0]}" --repeats 3
    clock "done"
} | tee -a "$LOG/asa.txt"
