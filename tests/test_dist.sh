#!/usr/bin/env bash
# Data-parallel `asa train` over MPI on the CPU: 2 ranks (ZeRO-1 on and off) give the losses of 1 rank with the same global
# batch (synthetic and shard data), a run checkpointed on 2 ranks resumes on 1 and on 3 ranks and
# continues the same curve, only rank 0 prints and writes, and a batch that does not divide among the
# ranks is refused. Losses agree to 1e-5 relative, not bit for bit: the gradient average sums the
# micro-batches in another order.
# Usage, from the repository root: bash tests/test_dist.sh path/to/asa [path/to/mpirun]
set -u

NAME=test_dist
# shellcheck source=tests/cli_lib.sh
source "$(dirname "$0")/cli_lib.sh"
MPIRUN=${2:-mpirun}
export OMP_NUM_THREADS=1  # up to 3 ranks share the cores

cat >"$tmp/tiny.json" <<'JSON'
{
  "model_type": "asa", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "max_position_embeddings": 256, "layer_pattern": "GL", "num_heads": 2,
  "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "kv_lora_rank": 16,
  "latent_groups": 2, "latent_dim": 8, "window_size": 16, "block_size": 8, "block_counts": 3,
  "selection_share": 4
}
JSON
BT=$((2 * 48))  # B x T
COMMON=(--config "$tmp/tiny.json" --batch 2 --seq 48 --log-every 1000 --val-every 10 --val-batches 2)

# mpi N ARGS...: asa ARGS on N ranks; sets $out and $rc like run.
mpi() {
    local n=$1
    shift
    checks=$((checks + 1))
    out=$(timeout "${RUN_TIMEOUT:-120}" "$MPIRUN" --allow-run-as-root --oversubscribe --bind-to none -np "$n" \
        "$ASA" "$@" 2>&1)
    rc=$?
}

expect_ok() {  # expect_ok N ARGS...
    if (($1 == 1)); then
        shift
        run "$@"
    else
        mpi "$@"
    fi
    ((rc == 0)) || fail "asa $* (ranks: $1): exit code $rc: $out"
}

# ---- 1 rank against 2 ranks, global batch 2 micro-batches (one per rank), synthetic copy task
syn=(--synthetic copy --alphabet 16 --steps 20)
expect_ok 1 train "${COMMON[@]}" "${syn[@]}" --batch-tokens $((2 * BT)) --out "$tmp/s1"
expect_ok 2 train "${COMMON[@]}" "${syn[@]}" --batch-tokens $((2 * BT)) --out "$tmp/s2"
close_losses "$tmp/s1" "$tmp/s2" "synthetic data, 2 ranks against 1"
check "$(grep -c '^done:' <<<"$out" | grep -qx 1; echo $?)" "2 ranks: expected one 'done:' line (rank 0 prints): $out"
check "$( (cd "$tmp/s2" && find . -name '.write-test*' -o -name '*.tmp*') | grep -q .; echo $((!$?)))" \
    "2 ranks: temporary files left in the run directory"

check "$(grep -q "ZeRO-1: AdamW moments sharded over 2 ranks" <<<"$out"; echo $?)" "2 ranks: no ZeRO-1 line: $out"
# ZeRO-1 is on by default with 2 ranks; without it (one all-reduce, full moments on every rank) the
# curve is the same
expect_ok 2 train "${COMMON[@]}" "${syn[@]}" --batch-tokens $((2 * BT)) --out "$tmp/s2z0" --zero 0
close_losses "$tmp/s1" "$tmp/s2z0" "synthetic data, 2 ranks without ZeRO-1 against 1"
check "$(grep -q "ZeRO-1" <<<"$out"; echo $((!$?)))" "--zero 0: a ZeRO-1 line was printed: $out"

# ---- the same on shard data: 120 windows of 49 tokens make 60 batches of 2, a multiple of every world
# size used here, so that epochs end at the same global batch for 1, 2 and 3 ranks
write_shard() {  # write_shard PATH N: a version-1 shard of N u16 tokens below 64 (repeated patterns)
    perl -e 'my ($path, $n) = @ARGV; srand(7);
        open(my $f, ">:raw", $path) or die "$path: $!";
        print $f pack("a8 V V Q< V", "ASATOKS", 1, 2, $n, 64), "\0" x 228;
        my @t; while (@t < $n) { my @p = map { 1 + int(rand(40)) } 1 .. 6; push @t, (@p) x 3 }
        print $f pack("v*", @t[0 .. $n - 1]);' "$@"
}
mkdir -p "$tmp/data"
write_shard "$tmp/data/train-00000.shard" $((120 * 48 + 1))
write_shard "$tmp/data/val-00000.shard" 500
shd=(--data "$tmp/data" --steps 20)
expect_ok 1 train "${COMMON[@]}" "${shd[@]}" --batch-tokens $((2 * BT)) --out "$tmp/d1"
expect_ok 2 train "${COMMON[@]}" "${shd[@]}" --batch-tokens $((2 * BT)) --out "$tmp/d2"
close_losses "$tmp/d1" "$tmp/d2" "shard data, 2 ranks against 1"

# ---- resume across world sizes: 6 micro-batches per step divide among 1, 2 and 3 ranks
for kind in syn shd; do
    declare -n args=$kind
    ref="$tmp/$kind-ref"
    expect_ok 1 train "${COMMON[@]}" "${args[@]}" --batch-tokens $((6 * BT)) --out "$ref"
    expect_ok 2 train "${COMMON[@]}" "${args[@]}" --batch-tokens $((6 * BT)) --out "$tmp/$kind-half" --exit-after 10
    check "$(grep -qx step-0000010 "$tmp/$kind-half/checkpoints/latest"; echo $?)" "$kind: 2 ranks did not checkpoint step 10"
    for n in 1 3; do
        cp -r "$tmp/$kind-half" "$tmp/$kind-on$n"
        expect_ok "$n" train --resume --out "$tmp/$kind-on$n"
        check "$(grep -q "accumulation x $n ranks\|$((6 / n)) accumulation = " <<<"$out"; echo $?)" \
            "$kind: resume on $n ranks does not report them: $out"
        close_losses "$ref" "$tmp/$kind-on$n" "$kind: checkpoint of 2 ranks resumed on $n"
    done
    unset -n args
done

# ---- refused: 6 micro-batches do not divide among 4 ranks; nothing is created
mpi 4 train "${COMMON[@]}" "${syn[@]}" --batch-tokens $((6 * BT)) --out "$tmp/bad"
checks=$((checks + 1))
if ((rc == 0)); then fail "4 ranks, 6 micro-batches: exit code 0"
elif ! grep -q "not a multiple of --batch x --seq x ranks" <<<"$out"; then fail "4 ranks: unclear message: $out"
elif (($(grep -c "not a multiple" <<<"$out") != 1)); then fail "4 ranks: the error should be printed once: $out"
elif [[ -e "$tmp/bad" ]]; then fail "4 ranks: the refused run created its directory"
fi

# ---- faults: a rank killed or stopped mid-run ends the job with an error well within 60 s, and the
# last checkpoint stays intact and resumable
fault_run() {  # fault_run SIGNAL DIR: start 2 ranks, signal rank 1 once a checkpoint exists; sets $out, $rc, $secs
    local dir=$2 mp kids t0
    ASA_DIST_TIMEOUT=5 timeout 120 "$MPIRUN" --allow-run-as-root --oversubscribe --bind-to none -np 2 "$ASA" train \
        "${COMMON[@]}" --synthetic copy --alphabet 16 --steps 1000000 --warmup 10 --batch-tokens $((2 * BT)) --ckpt-every 50 \
        --val-every 0 --out "$dir" >"$dir.out" 2>&1 &
    mp=$!
    for _ in $(seq 300); do [[ -s "$dir/checkpoints/latest" ]] && break; sleep 0.1; done
    kids=($(pgrep -P "$(pgrep -P "$mp")"))  # timeout -> mpirun -> the ranks
    checks=$((checks + 1))
    if ((${#kids[@]} != 2)); then
        fail "$1: expected 2 rank processes under mpirun, found ${#kids[@]}"
        kill -9 "$mp" "${kids[@]}" 2>/dev/null
        return
    fi
    t0=$(date +%s.%N)
    kill "-$1" "${kids[1]}"
    wait "$mp"
    rc=$?
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    out=$(cat "$dir.out")
    kill -9 "${kids[@]}" 2>/dev/null  # a stopped rank that mpirun could not end
    check "$( ((rc != 0)) && awk -v s="$secs" 'BEGIN { exit !(s < 60) }'; echo $?)" \
        "$1 to rank 1: exit code $rc after $secs s: $(tail -n 5 <<<"$out")"
    echo "SIG$1 to rank 1: the job ended with exit code $rc after $secs s"
    expect_ok 1 train --resume --out "$dir" --steps $(($(sed 's/step-0*//' "$dir/checkpoints/latest") + 2))
}
fault_run KILL "$tmp/killed"
fault_run STOP "$tmp/stopped"
check "$(grep -q "has waited .* s for the other ranks (ASA_DIST_TIMEOUT=5): a rank died or hangs" "$tmp/stopped.out"; echo $?)" \
    "SIGSTOP: no watchdog message: $(tail -n 5 "$tmp/stopped.out")"

# ---- a NaN under ZeRO-1 is reported once, naming the tensor
nan="$tmp/nan"
cp -a "$tmp/s2" "$nan"
model="$nan/checkpoints/step-0000020/model.safetensors"
size=$(stat -c %s "$model")
head -c 4096 /dev/zero | tr '\0' '\377' | dd of="$model" bs=1 seek=$((size - 4096)) conv=notrunc status=none
mpi 2 train --resume --out "$nan" --steps 25
check "$( ((rc != 0)) && (($(grep -c "step 21: loss is NaN .*first non-finite: parameter lm_head.weight" <<<"$out") == 1)); echo $?)" \
    "NaN on 2 ranks: expected one message naming lm_head.weight (exit code $rc): $out"

# ---- an environment launch (RANK/WORLD_SIZE) needs NCCL and a GPU: refused clearly on the CPU
checks=$((checks + 1))
out=$(RANK=0 WORLD_SIZE=2 "$ASA" train "${COMMON[@]}" "${syn[@]}" --device cpu --out "$tmp/envlaunch" 2>&1)
rc=$?
if ((rc == 0)); then fail "RANK=0 WORLD_SIZE=2 on the CPU: exit code 0"
elif ! grep -q "launched as rank 0 of 2 by RANK/WORLD_SIZE variables without mpirun" <<<"$out"; then
    fail "RANK/WORLD_SIZE on the CPU: unclear message: $out"
fi

cli_test_end
