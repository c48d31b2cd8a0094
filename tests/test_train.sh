#!/usr/bin/env bash
# `asa train` end to end on a tiny model: the run directory, exact resume (after --exit-after, SIGTERM
# and SIGKILL: per-step losses bit-identical to an uninterrupted run), token-shard data with a
# tokenizer.json, accumulation, pruning of old checkpoints, a NaN stop, and bad input that must fail
# with a clear message and leave the run directory untouched.
# Usage, from the repository root: bash tests/test_train.sh path/to/asa
set -u

NAME=test_train
# shellcheck source=tests/cli_lib.sh
source "$(dirname "$0")/cli_lib.sh"
bg_pid=
cleanup_extra() { [[ -n "$bg_pid" ]] && kill -9 "$bg_pid" 2>/dev/null; }

# A model small enough that a step takes milliseconds, with both ASA layer kinds and a sequence that
# crosses the window and several selection blocks.
cat >"$tmp/tiny.json" <<'EOF'
{
  "model_type": "asa", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "max_position_embeddings": 256, "layer_pattern": "GL", "num_heads": 2,
  "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "kv_lora_rank": 16,
  "latent_groups": 2, "latent_dim": 8, "window_size": 16, "block_size": 8, "block_counts": 3,
  "selection_share": 4
}
EOF
sed 's/"hidden_size": 32/"hidden_size": 48/' "$tmp/tiny.json" >"$tmp/other.json"

COMMON=(--config "$tmp/tiny.json" --batch 2 --seq 48 --alphabet 16 --log-every 1000)


expect_ok() {
    run "$@"
    ((rc == 0)) || fail "asa $*: exit code $rc: $out"
}


# The per-step numbers that must repeat exactly: every log field except the timings.
losses() {
    sed -E 's/, "tokens_per_sec": [^,}]*//; s/, "elapsed_s": [^,}]*//' "$1/log.jsonl"
}

same_losses() {  # same_losses REF RUN WHAT
    checks=$((checks + 1))
    local n
    n=$(wc -l <"$2/log.jsonl")
    if ! diff <(losses "$1") <(losses "$2") >"$tmp/diff.txt"; then
        fail "$3: log.jsonl differs from the uninterrupted run: $(head -c 600 "$tmp/diff.txt")"
    elif ((n != $(wc -l <"$1/log.jsonl"))); then
        fail "$3: $n log lines"
    fi
}

# A fingerprint of every file under a directory (names and contents).
fingerprint() {
    (cd "$1" && find . -print | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
}

# write_shard PATH VOCAB_HINT N SEED: a version-1 shard of N u16 tokens, runs of a repeated pattern
# below 64 so that a model can learn something.
write_shard() {
    perl -e 'my ($path, $vocab, $n, $seed) = @ARGV; srand($seed);
        open(my $f, ">:raw", $path) or die "$path: $!";
        print $f pack("a8 V V Q< V", "ASATOKS", 1, 2, $n, $vocab), "\0" x 228;
        my @t; while (@t < $n) { my @p = map { 1 + int(rand(40)) } 1 .. 6; push @t, (@p) x 3 }
        print $f pack("v*", @t[0 .. $n - 1]);' "$@"
}

# ---- an uninterrupted reference run, and the run directory it leaves
ref="$tmp/ref"
expect_ok train "${COMMON[@]}" --synthetic copy --steps 20 --ckpt-every 5 --keep 2 --val-every 5 --val-batches 2 \
    --out "$ref"
for f in config.json log.jsonl loss.svg checkpoints/latest; do
    [[ -s "$ref/$f" ]] || fail "reference run: $ref/$f missing or empty"
done
check "$(grep -c '"step"' "$ref/log.jsonl" | grep -qx 20; echo $?)" "reference run: log.jsonl does not have 20 lines"
check "$(grep -c '"val_loss"' "$ref/log.jsonl" | grep -qx 4; echo $?)" "reference run: expected val_loss at steps 5, 10, 15, 20"
for key in step loss lr grad_norm tokens_per_sec elapsed_s; do
    check "$(grep -q "\"$key\"" "$ref/log.jsonl"; echo $?)" "log.jsonl has no '$key'"
done
check "$(grep -qx 'step-0000020' "$ref/checkpoints/latest"; echo $?)" "checkpoints/latest does not name step-0000020"
kept=$(cd "$ref/checkpoints" && ls -d step-* | tr '\n' ' ')
check "$([[ "$kept" == "step-0000015 step-0000020 " ]]; echo $?)" "--keep 2: checkpoints left: $kept"
for f in model.safetensors optimizer.safetensors trainer_state.json config.json; do
    [[ -s "$ref/checkpoints/step-0000020/$f" ]] || fail "checkpoint step-0000020 lacks $f"
done
check "$(grep -q '</svg>' "$ref/loss.svg" && grep -q '<polyline' "$ref/loss.svg" && grep -q '>step<' "$ref/loss.svg"; echo $?)" \
    "loss.svg is not a chart with a line and a step axis"
first=$(sed -n '1s/.*"loss": \([0-9.]*\).*/\1/p' "$ref/log.jsonl")
last=$(sed -n '20s/.*"loss": \([0-9.]*\).*/\1/p' "$ref/log.jsonl")
check "$(awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'; echo $?)" "loss did not fall: $first -> $last"

# ---- 10 steps, exit, resume for the other 10: identical per-step losses
r1="$tmp/r1"
expect_ok train "${COMMON[@]}" --synthetic copy --steps 20 --ckpt-every 5 --keep 2 --val-every 5 --val-batches 2 \
    --out "$r1" --exit-after 10
check "$(grep -c '"step"' "$r1/log.jsonl" | grep -qx 10; echo $?)" "--exit-after 10: log does not stop at step 10"
grep -q 'exit-after' <<<"$out" || fail "--exit-after: no message saying where it stopped: $out"
expect_ok train --resume --out "$r1" --log-every 1000
same_losses "$ref" "$r1" "--exit-after 10 then --resume"

# ---- --recompute changes the memory, not the results; it may be dropped on resume
rcp="$tmp/recompute"
expect_ok train "${COMMON[@]}" --synthetic copy --steps 20 --ckpt-every 5 --keep 2 --val-every 5 --val-batches 2 \
    --out "$rcp" --exit-after 10 --recompute
expect_ok train --resume --out "$rcp" --log-every 1000
same_losses "$ref" "$rcp" "--recompute for 10 steps, then --resume without it"

# ---- a run from another config, a changed training option, an existing run without --resume
before=$(fingerprint "$r1")
expect_error 'hidden_size \(48 vs 32\)' train --resume --config "$tmp/other.json" --out "$r1" --steps 30
expect_error '--lr .*differs' train --resume --out "$r1" --steps 30 --lr 0.01
expect_error 'not empty.*--resume' train "${COMMON[@]}" --synthetic copy --steps 5 --out "$r1"
check "$([[ "$(fingerprint "$r1")" == "$before" ]]; echo $?)" "a refused command changed the run directory"

# ---- a truncated model.safetensors in the checkpoint latest names
r2="$tmp/r2"
cp -a "$ref" "$r2"
model="$r2/checkpoints/step-0000020/model.safetensors"
truncate -s $(($(stat -c %s "$model") - 100)) "$model"
before=$(fingerprint "$r2")
expect_error 'step-0000020/model.safetensors' train --resume --out "$r2" --steps 25
check "$([[ "$(fingerprint "$r2")" == "$before" ]]; echo $?)" "a failed resume changed the run directory"
expect_error 'no such run directory' train --resume --out "$tmp/never-ran"
mkdir "$tmp/no-ckpt"
expect_error 'no checkpoint to resume' train --resume --out "$tmp/no-ckpt"

# ---- SIGTERM: finish the step, write a checkpoint, exit 0; then resume exactly
long=(--synthetic copy --steps 300 --ckpt-every 5 --val-every 50 --val-batches 2)
lref="$tmp/long-ref"
expect_ok train "${COMMON[@]}" "${long[@]}" --out "$lref"

# wait_for_ckpt RUN: waits (up to 300 s, for loaded machines) until checkpoints/latest names step 10 or later.
wait_for_ckpt() {
    for _ in $(seq 30000); do
        local l
        l=$(cat "$1/checkpoints/latest" 2>/dev/null)
        [[ "$l" =~ ^step-([0-9]+)$ ]] && ((10#${BASH_REMATCH[1]} >= 10)) && return 0
        kill -0 "$bg_pid" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

r3="$tmp/r3"
"$ASA" train "${COMMON[@]}" "${long[@]}" --out "$r3" >"$tmp/r3.out" 2>&1 &
bg_pid=$!
wait_for_ckpt "$r3" || fail "SIGTERM run: no checkpoint 10 appeared"
kill -TERM "$bg_pid"
wait "$bg_pid"
rc=$?
bg_pid=
checks=$((checks + 1))
if ((rc != 0)); then
    fail "SIGTERM: exit code $rc, expected 0: $(tail -3 "$tmp/r3.out")"
elif ! grep -q 'interrupted by signal 15 after step' "$tmp/r3.out"; then
    fail "SIGTERM: no message saying where the checkpoint went (or the run ended first): $(tail -3 "$tmp/r3.out")"
else
    stopped=$(grep -c '"step"' "$r3/log.jsonl")
    check "$(grep -qx "$(printf 'step-%07d' "$stopped")" "$r3/checkpoints/latest"; echo $?)" \
        "SIGTERM: latest does not name the last logged step $stopped"
fi
expect_ok train --resume --out "$r3" --log-every 1000
same_losses "$lref" "$r3" "SIGTERM then --resume"

# ---- SIGKILL at an arbitrary point after checkpoint 10: resume drops the log lines past the checkpoint
r4="$tmp/r4"
"$ASA" train "${COMMON[@]}" "${long[@]}" --out "$r4" >"$tmp/r4.out" 2>&1 &
bg_pid=$!
wait_for_ckpt "$r4" || fail "SIGKILL run: no checkpoint 10 appeared"
kill -9 "$bg_pid"
wait "$bg_pid" 2>/dev/null
rc=$?
bg_pid=
check "$((rc == 137 ? 0 : 1))" "SIGKILL: the run was not killed (exit code $rc; it finished first?)"
resumed_from=$(cat "$r4/checkpoints/latest")
expect_ok train --resume --out "$r4" --log-every 1000
grep -q "resuming .*$resumed_from" <<<"$out" || fail "SIGKILL: resume did not start from $resumed_from: $out"
same_losses "$lref" "$r4" "SIGKILL then --resume"
leftovers=$(find "$r4" -name '.tmp-*' -o -name '*.tmp.*' | head -3)
check "$([[ -z "$leftovers" ]]; echo $?)" "temporary files left after resume: $leftovers"

# ---- token shards: tokenizer.json copied, validation loss, exact resume of the loader
data="$tmp/data"
mkdir -p "$data"
write_shard "$data/train-00000.shard" 64 3000 1
write_shard "$data/train-00001.shard" 64 2000 2
write_shard "$data/val-00000.shard" 64 1500 3
echo '{"model": {"type": "BPE"}}' >"$data/tokenizer.json"
DCOMMON=(--config "$tmp/tiny.json" --data "$data" --batch 2 --seq 32 --steps 30 --ckpt-every 10 --val-every 10
    --val-batches 3 --lr 3e-3 --log-every 1000)
d1="$tmp/d1"
expect_ok train "${DCOMMON[@]}" --out "$d1"
check "$(cmp -s "$data/tokenizer.json" "$d1/tokenizer.json" && cmp -s "$data/tokenizer.json" \
    "$d1/checkpoints/step-0000030/tokenizer.json"; echo $?)" "tokenizer.json not copied into the run and its checkpoint"
check "$(grep -c '"val_loss"' "$d1/log.jsonl" | grep -qx 3; echo $?)" "data run: expected 3 validation losses"
d2="$tmp/d2"
expect_ok train "${DCOMMON[@]}" --out "$d2" --exit-after 13
expect_ok train --resume --out "$d2" --log-every 1000
same_losses "$d1" "$d2" "shard data: --exit-after 13 then --resume"
expect_error "--data .*not the run's data" train --resume --out "$d2" --steps 40 --data "$tmp"

# ---- gradient accumulation: batch 1 x 2 accumulation steps = batch 2 (the copy task's sequences all
# have T/2 targets, so the mean of the two micro-batch means is the batch mean; only rounding differs)
acc="$tmp/acc"
expect_ok train "${COMMON[@]}" --synthetic copy --steps 20 --exit-after 3 --out "$acc" --batch 1 --batch-tokens 96
for s in 1 3; do
    a=$(sed -n "${s}s/.*\"loss\": \([0-9.e+-]*\).*/\1/p" "$ref/log.jsonl")
    b=$(sed -n "${s}s/.*\"loss\": \([0-9.e+-]*\).*/\1/p" "$acc/log.jsonl")
    check "$(awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * a) }'; echo $?)" \
        "accumulation: step $s loss $b with batch 1 x 2, $a with batch 2"
done
expect_error 'batch-tokens 100 must be a positive multiple' train "${COMMON[@]}" --synthetic copy --out "$tmp/bt" \
    --batch-tokens 100

# ---- NaN: a checkpoint whose weights hold NaN; the resumed run stops at its first step, exit 1
r5="$tmp/r5"
cp -a "$ref" "$r5"
model="$r5/checkpoints/step-0000020/model.safetensors"
size=$(stat -c %s "$model")
head -c 4096 /dev/zero | tr '\0' '\377' | dd of="$model" bs=1 seek=$((size - 4096)) conv=notrunc status=none
r6="$tmp/r6"
cp -a "$r5" "$r6"
expect_error 'step 21: loss is NaN .*first non-finite: parameter lm_head.weight; stopping .*step-0000020' \
    train --resume --out "$r5" --steps 25
check "$(grep -qx step-0000020 "$r5/checkpoints/latest" && [[ ! -e "$r5/checkpoints/step-0000021" ]]; echo $?)" \
    "NaN: a checkpoint of the bad state was written"
check "$(grep -c '"step"' "$r5/log.jsonl" | grep -qx 20; echo $?)" "NaN: the bad step was logged"
# --on-nan skip: every step fails the same way, so after 10 skipped steps the 11th stops the run
expect_error 'step 31: loss is NaN .*11 steps in a row were skipped: the run has diverged' \
    train --resume --out "$r6" --steps 40 --on-nan skip
check "$(grep -c '"skipped": "loss is NaN' "$r6/log.jsonl" | grep -qx 10; echo $?)" \
    "--on-nan skip: expected 10 skipped steps in log.jsonl: $(tail -n 3 "$r6/log.jsonl")"
check "$(grep -c 'skipped: loss is NaN' <<<"$out" | grep -qx 10; echo $?)" "--on-nan skip: 10 'skipped' lines expected: $out"
check "$(grep -qx step-0000020 "$r6/checkpoints/latest"; echo $?)" "--on-nan skip: latest moved past the good checkpoint"
expect_error "--on-nan: 'maybe' is not one of stop, skip" train --resume --out "$r6" --on-nan maybe

# ---- a log line that cannot be written (here a 2 KB file-size limit; a full disk alike) stops the run at
# the next step with a message naming log.jsonl, exit 1
checks=$((checks + 1))
out=$( (ulimit -f 2 && "$ASA" train "${COMMON[@]}" --synthetic copy --steps 100 --ckpt-every 0 --val-every 0 \
    --out "$tmp/logfull") 2>&1)
rc=$?
if ((rc != 1)) || ! grep -q "log.jsonl: write failed" <<<"$out"; then
    fail "a log.jsonl over the file-size limit: exit code $rc: $(tail -n 3 <<<"$out")"
fi

# ---- other bad input
expect_error "$tmp/missing-data.*does not exist" train --config "$tmp/tiny.json" --data "$tmp/missing-data" \
    --out "$tmp/m1"
check "$([[ ! -e "$tmp/m1" ]]; echo $?)" "a missing data directory still created the run directory"
big="$tmp/bigvocab"
mkdir -p "$big"
write_shard "$big/train-00000.shard" 50257 3000 1
expect_error 'train-00000.shard.*50257.*vocab_size 64' train --config "$tmp/tiny.json" --data "$big" --out "$tmp/m2"
expect_error 'no train-\*\.shard' train --config "$tmp/tiny.json" --data "$tmp/r1" --out "$tmp/m3"
expect_error '--synthetic: unknown task' train --config "$tmp/tiny.json" --synthetic reverse --out "$tmp/m4"
expect_error 'one data source' train --config "$tmp/tiny.json" --out "$tmp/m5"
if [[ $(id -u) != 0 ]]; then  # root writes anywhere
    mkdir "$tmp/ro" && chmod 555 "$tmp/ro"
    expect_error 'ro/run: cannot create directory' train "${COMMON[@]}" --synthetic copy --out "$tmp/ro/run"
    chmod 755 "$tmp/ro"
fi

cli_test_end
