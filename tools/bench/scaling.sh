#!/usr/bin/env bash
# Issue 8's multi-GPU measurements on a machine with N >= 2 GPUs: data-parallel `asa train` of a config
# (default asa-340M) at sequence length T (default 8192), one sequence per GPU per micro-batch and a global
# batch of N sequences, on 1 GPU (N accumulation steps) and on N GPUs under mpirun (one each), with
# ZeRO-1 on and off. Reports tokens/s (median over the steps after the first), the scaling efficiency
# (tokens/s on N GPUs / (N x tokens/s on 1)), and each GPU's peak memory, sampled by nvidia-smi every
# 200 ms. Synthetic copy-task data: the throughput does not depend on the tokens.
# Usage, from the repository root, after scripts/device_build.sh (build-device/):
#   bash tools/bench/scaling.sh [N] [config] [T] [steps]     (defaults: all GPUs, configs/asa-340M.json, 8192, 8)
# Results go to stdout and $OUT (or /tmp/scaling).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
NGPU=${1:-$(nvidia-smi -L | grep -c "^GPU")}
CONFIG=${2:-configs/asa-340M.json}
SEQ=${3:-8192}
STEPS=${4:-8}
LOG=${OUT:-/tmp/scaling}
ASA=${ASA:-build-device/asa}
mkdir -p "$LOG"
[[ -f /tmp/deps/env.sh ]] && source /tmp/deps/env.sh
export NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=4
((NGPU >= 2)) || { echo "scaling: needs 2 or more GPUs (found $NGPU)"; exit 77; }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader

# median tokens/s of log.jsonl's steps after the first (warm-up, allocation)
rate() { grep '"tokens_per_sec"' "$1/log.jsonl" | tail -n +2 | sed 's/.*"tokens_per_sec": \([0-9.]*\).*/\1/' |
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# run NAME RANKS ZERO: one training run; prints its rate and each GPU's peak memory in MiB.
run() {
    local name=$1 ranks=$2 zero=$3 dir="$LOG/$1"
    rm -rf "$dir" "$dir.mem"
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 200 >"$dir.mem" &
    local smi=$!
    local cmd=("$ASA" train --config "$CONFIG" --synthetic copy --device cuda --seq "$SEQ" --batch 1
               --batch-tokens $((NGPU * SEQ)) --steps "$STEPS" --warmup 1 --log-every 1 --val-every 0
               --ckpt-every 0 --zero "$zero" --out "$dir")
    if ((ranks == 1)); then
        CUDA_VISIBLE_DEVICES=0 "${cmd[@]}" >"$dir.out" 2>&1
    else
        mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" -x NCCL_NVLS_ENABLE -x OMP_NUM_THREADS \
            "${cmd[@]}" >"$dir.out" 2>&1
    fi
    local rc=$?
    kill "$smi"
    wait "$smi" 2>/dev/null
    if ((rc != 0)); then
        echo "$name: exit code $rc"
        tail -n 5 "$dir.out"
        return
    fi
    local peaks
    peaks=$(awk -F', ' '{ if ($2 > m[$1]) m[$1] = $2 } END { for (g in m) printf "gpu%s %d MiB  ", g, m[g] }' "$dir.mem")
    printf "%-14s %d rank(s)  zero %d  %10.1f tok/s  peak memory: %s\n" "$name" "$ranks" "$zero" "$(rate "$dir")" "$peaks"
    grep -E "data-parallel|ZeRO-1" "$dir.out" | head -2
}

{
    run one-gpu 1 0
    run "gpus-$NGPU-zero" "$NGPU" 1
    run "gpus-$NGPU-nozero" "$NGPU" 0
    one=$(rate "$LOG/one-gpu")
    for v in zero nozero; do
        n=$(rate "$LOG/gpus-$NGPU-$v")
        awk -v a="$one" -v b="$n" -v k="$NGPU" -v v="$v" \
            'BEGIN { if (a > 0) printf "scaling efficiency 1 -> %d GPUs (%s): %.1f%%\n", k, v, 100 * b / (k * a) }'
    done
} 2>&1 | tee "$LOG/scaling.txt"
