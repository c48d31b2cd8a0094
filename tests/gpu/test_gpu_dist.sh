#!/usr/bin/env bash
# Data-parallel training on GPUs through NCCL.
# One GPU: the NCCL path with a world of one rank (ASA_DIST_BACKEND=nccl, started as RANK=0 WORLD_SIZE=1
# the way a torchrun/SLURM-style launcher would, so the NCCL id goes through the id file) gives the
# losses of a run without it, with and without ZeRO-1 (whose grouped reduce/broadcast and optimizer-state
# gather then run through NCCL too), and a ZeRO-1 checkpoint resumes without it.
# Two GPUs or more: 2 ranks (mpirun when present, else RANK/WORLD_SIZE/LOCAL_RANK processes sharing an id
# file) give the losses of 1 GPU at the same global batch, and a checkpoint of the 2-GPU run resumes on
# 1 GPU and continues the same curve.
# Losses are fp32 (--precision fp32): 1 rank against itself within 1e-6, 2 ranks against 1 within 1e-5
# (the all-reduce sums in another order).
# Without a GPU or without NCCL in the build: prints SKIPPED and exits 77.
# Usage, from the repository root: bash tests/gpu/test_gpu_dist.sh path/to/asa [path/to/mpirun]
set -u

NAME=test_gpu_dist
# shellcheck source=tests/cli_lib.sh
source "$(dirname "$0")/../cli_lib.sh"
MPIRUN=${2:-}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! ngpu=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU") || ((ngpu == 0)); then
    echo "SKIPPED: no GPU"
    exit 77
fi

cat >"$tmp/tiny.json" <<'JSON'
{
  "model_type": "asa", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "max_position_embeddings": 256, "layer_pattern": "GL", "num_heads": 4,
  "qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "v_head_dim": 16, "kv_lora_rank": 32,
  "latent_groups": 2, "latent_dim": 16, "window_size": 32, "block_size": 16, "block_counts": 3,
  "selection_share": 4
}
JSON
COMMON=(--config "$tmp/tiny.json" --device cuda --precision fp32 --synthetic copy --alphabet 16 --batch 4 --seq 96
        --steps 50 --warmup 3 --log-every 1000 --val-every 10 --val-batches 2 --ckpt-every 10)

run train "${COMMON[@]}" --out "$tmp/plain"
((rc == 0)) || fail "plain GPU run: exit code $rc: $out"

nccl_env=(env ASA_DIST_BACKEND=nccl RANK=0 WORLD_SIZE=1 LOCAL_RANK=0)
for zero in 0 1; do
    checks=$((checks + 1))
    out=$("${nccl_env[@]}" "$ASA" train "${COMMON[@]}" --zero $zero --out "$tmp/nccl$zero" 2>&1)
    rc=$?
    if ((rc != 0)) && grep -q "a build with NCCL (this one has none)" <<<"$out"; then
        echo "SKIPPED: this build has no NCCL"
        exit 77
    fi
    ((rc == 0)) || fail "NCCL, one rank, --zero $zero: exit code $rc: $out"
    check "$(grep -q "gradients over NCCL" <<<"$out"; echo $?)" "--zero $zero: the run does not say it uses NCCL: $out"
    close_losses "$tmp/plain" "$tmp/nccl$zero" "NCCL with one rank, --zero $zero, against no NCCL" 1e-6
done
check "$(grep -q "ZeRO-1: AdamW moments sharded over 1 ranks" <<<"$out"; echo $?)" "--zero 1: no ZeRO-1 line: $out"
check "$([[ ! -e "$tmp/nccl1.nccl-id" ]]; echo $?)" "the NCCL id file was left behind"
# The checkpoint of step 30 of the ZeRO-1 run (moments gathered through NCCL) resumed without NCCL.
cp -a "$tmp/nccl1" "$tmp/resumed"
echo step-0000030 >"$tmp/resumed/checkpoints/latest"
run train --resume --out "$tmp/resumed" --device cuda --precision fp32
((rc == 0)) || fail "resume of the NCCL ZeRO-1 checkpoint: exit code $rc: $out"
close_losses "$tmp/plain" "$tmp/resumed" "NCCL ZeRO-1 checkpoint of step 30 resumed without NCCL" 1e-6

if ((ngpu >= 2)); then
    export NCCL_NVLS_ENABLE=0  # no NVLink multicast (see the device notes in the README)
    two=(--batch-tokens $((2 * 4 * 96)))
    run train "${COMMON[@]}" "${two[@]}" --out "$tmp/one"
    ((rc == 0)) || fail "1 GPU, 2 micro-batches: exit code $rc: $out"
    if [[ -n "$MPIRUN" ]] && command -v "$MPIRUN" >/dev/null; then
        how="mpirun"
        checks=$((checks + 1))
        out=$(timeout 600 "$MPIRUN" --allow-run-as-root --oversubscribe --bind-to none -np 2 -x NCCL_NVLS_ENABLE \
            "$ASA" train "${COMMON[@]}" "${two[@]}" --out "$tmp/two" 2>&1)
        rc=$?
    else
        how="RANK/WORLD_SIZE"
        checks=$((checks + 1))
        for r in 1 0; do
            RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r ASA_DIST_ID_FILE="$tmp/id" timeout 600 \
                "$ASA" train "${COMMON[@]}" "${two[@]}" --out "$tmp/two" >"$tmp/two.$r.out" 2>&1 &
        done
        rc=0
        for job in $(jobs -p); do wait "$job" || rc=$?; done
        out=$(cat "$tmp/two.0.out" "$tmp/two.1.out")
    fi
    ((rc == 0)) || fail "2 GPUs ($how): exit code $rc: $out"
    check "$(grep -q "2 ranks started by .*gradients over NCCL" <<<"$out"; echo $?)" "2 GPUs: not over NCCL: $out"
    close_losses "$tmp/one" "$tmp/two" "2 GPUs ($how, ZeRO-1) against 1 GPU"
    cp -a "$tmp/two" "$tmp/two-on-one"
    echo step-0000030 >"$tmp/two-on-one/checkpoints/latest"
    run train --resume --out "$tmp/two-on-one" --device cuda --precision fp32
    ((rc == 0)) || fail "the 2-GPU checkpoint resumed on 1 GPU: exit code $rc: $out"
    close_losses "$tmp/one" "$tmp/two-on-one" "2-GPU checkpoint of step 30 resumed on 1 GPU"
else
    echo "one GPU: the 2-GPU half of this test did not run"
fi

cli_test_end
