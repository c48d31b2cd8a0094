#!/usr/bin/env bash
# Data-parallel `asa train` over MPI on the CPU: 2 ranks give the losses of 1 rank with the same global
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

# close_losses REF RUN WHAT: the same steps, with loss, grad_norm and val_loss within 1e-5 relative.
close_losses() {
    checks=$((checks + 1))
    local msg
    msg=$(paste -d '\n' "$1/log.jsonl" "$2/log.jsonl" | awk '
        function field(line, key,   m) { return match(line, "\"" key "\": [^,}]*") ? substr(line, RSTART + length(key) + 4, RLENGTH - length(key) - 4) : "" }
        NR % 2 == 1 { a = $0; next }
        {
            if (field(a, "step") != field($0, "step")) { print "step " field(a, "step") " vs " field($0, "step"); bad = 1; exit }
            split("loss grad_norm val_loss lr", keys, " ")
            for (i = 1; i <= 4; i++) {
                x = field(a, keys[i]); y = field($0, keys[i])
                if ((x == "") != (y == "")) { print "step " field(a, "step") ": " keys[i] " present in one log only"; bad = 1; exit }
                if (x == "") continue
                d = x - y; if (d < 0) d = -d; s = x < 0 ? -x : x
                if (d > 1e-5 * s) { print "step " field(a, "step") ": " keys[i] " " x " vs " y; bad = 1; exit }
                if (d / s > worst) worst = d / s
            }
        }
        END { if (bad) exit; if (NR % 2) print "odd line count"; else printf "max %.3g\n", worst }')
    local n1 n2
    n1=$(wc -l <"$1/log.jsonl")
    n2=$(wc -l <"$2/log.jsonl")
    if [[ "$msg" == max* ]]; then echo "$3: $n1 steps, largest relative difference ${msg#max }"
    elif [[ -n "$msg" ]]; then fail "$3: $msg"
    elif ((n1 != n2)); then fail "$3: $n2 log lines, the reference has $n1"
    fi
}

# ---- 1 rank against 2 ranks, global batch 2 micro-batches (one per rank), synthetic copy task
syn=(--synthetic copy --alphabet 16 --steps 20)
expect_ok 1 train "${COMMON[@]}" "${syn[@]}" --batch-tokens $((2 * BT)) --out "$tmp/s1"
expect_ok 2 train "${COMMON[@]}" "${syn[@]}" --batch-tokens $((2 * BT)) --out "$tmp/s2"
close_losses "$tmp/s1" "$tmp/s2" "synthetic data, 2 ranks against 1"
check "$(grep -c '^done:' <<<"$out" | grep -qx 1; echo $?)" "2 ranks: expected one 'done:' line (rank 0 prints): $out"
check "$( (cd "$tmp/s2" && find . -name '.write-test*' -o -name '*.tmp*') | grep -q .; echo $((!$?)))" \
    "2 ranks: temporary files left in the run directory"

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

cli_test_end
