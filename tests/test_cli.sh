#!/usr/bin/env bash
# Checks of the `asa` command as a user meets it: `asa info` numbers for the 340M configs, clean
# failures (exit code 1..127 and a message naming the problem) on bad input, and a short synthetic
# training run. Usage, from the repository root: bash tests/test_cli.sh path/to/asa
set -u

NAME=test_cli
RUN_TIMEOUT=60
# shellcheck source=tests/cli_lib.sh
source "$(dirname "$0")/cli_lib.sh"


# Total KV-cache bytes from the "model total: 58.22 MiB at 8192 tokens" line of `asa info`.
kv_total_bytes() {
    awk '/model total:/ {
        for (i = 1; i < NF; i++) if ($i == "total:") { v = $(i + 1); u = $(i + 2) }
        m = u == "B" ? 1 : u == "KiB" ? 1024 : u == "MiB" ? 1048576 : u == "GiB" ? 1073741824 : -1
        if (m > 0) printf "%.0f\n", v * m
    }' <<<"$1"
}

# check_info CONFIG KIND...: exit 0, about 340M parameters, a KV-cache row for each layer kind letter.
# Sets $kv_total to the model's total KV-cache bytes at context 8192 (empty when it cannot be read).
check_info() {
    local config=$1
    shift
    kv_total=
    run info --config "$config" --context 8192
    if ((rc != 0)); then
        fail "asa info --config $config: exit code $rc: $out"
        return
    fi
    local params
    params=$(sed -n 's/^parameters .*(\([0-9]*\)).*/\1/p' <<<"$out")
    if [[ -z "$params" ]]; then
        fail "asa info --config $config: no 'parameters ... (N)' line"
    elif ((params < 306000000 || params > 374000000)); then
        fail "asa info --config $config: $params parameters, not within 10% of 340M"
    fi
    # Rows of the KV table only (the parameter table names kinds too): "kind (X)  layers elems tokens".
    local kv kind
    kv=$(sed -n '/^KV cache/,$p' <<<"$out")
    for kind in "$@"; do
        grep -Eq "\($kind\) +[0-9]+ +[0-9]+ +[0-9]+ " <<<"$kv" ||
            fail "asa info --config $config: no KV-cache row for kind $kind"
    done
    kv_total=$(kv_total_bytes "$out")
    [[ -n "$kv_total" ]] || fail "asa info --config $config: no parsable 'model total:' line"
}

check_info configs/asa-340M.json G L
asa_kv=$kv_total
check_info configs/nsa-340M.json N
nsa_kv=$kv_total
check_info configs/transformer-340M.json F
if [[ -n "$asa_kv" && -n "$nsa_kv" ]]; then
    checks=$((checks + 1))
    ((asa_kv < nsa_kv)) || fail "ASA KV cache at 8192 ($asa_kv B) is not below NSA's ($nsa_kv B)"
fi


missing="$tmp/no-such-dir/missing.json"
missing_re=$(sed 's/[][\\.*^$+?(){}|]/\\&/g' <<<"$missing")
# Valid in every other key, so the loader can only object to the head counts.
sed -e 's/"num_heads": *[0-9]*/"num_heads": 12/' -e 's/"num_kv_heads": *[0-9]*/"num_kv_heads": 5/' \
    configs/nsa-340M.json >"$tmp/bad-heads.json"
grep -q '"num_kv_heads": 5' "$tmp/bad-heads.json" || fail "could not write the bad-key config"

expect_error '--config.*required' info
expect_error "$missing_re" info --config "$missing"
expect_error 'num_kv_heads' info --config "$tmp/bad-heads.json"
expect_error "--context.*abc" info --config configs/asa-340M.json --context abc
expect_error '--frobnicate' info --config configs/asa-340M.json --frobnicate
expect_error 'frobnicate' frobnicate
expect_error '--synthetic' train --config configs/asa-tiny.json --steps 1
expect_error 'gpu' bench gpu

run train --config configs/asa-tiny.json --synthetic copy --steps 3 --batch 2 --seq 32 --log-every 1 --out "$tmp/run"
if ((rc != 0)); then
    fail "asa train (tiny, 3 steps): exit code $rc: $out"
else
    steps=$(grep -c '^step ' <<<"$out")
    ((steps == 3)) || fail "asa train (tiny, 3 steps, --log-every 1): $steps 'step' lines, expected 3"
fi

# Tokenizer training and `asa prepare` on text from this checkout (README and design notes).
run tokenizer train --vocab-size 600 -o "$tmp/tok.json" README.md docs/design.md
((rc == 0)) || fail "asa tokenizer train: exit code $rc: $out"
grep -q 'trained 600 tokens' <<<"$out" || fail "asa tokenizer train: expected 'trained 600 tokens': $out"
run tokenizer encode --tokenizer "$tmp/tok.json" "sparse attention"
((rc == 0)) || fail "asa tokenizer encode: exit code $rc: $out"
run prepare -o "$tmp/data" --tokenizer "$tmp/tok.json" --val-fraction 0.1 README.md docs
if ((rc != 0)); then
    fail "asa prepare: exit code $rc: $out"
else
    for f in train-00000.shard val-00000.shard tokenizer.json; do
        [[ -s "$tmp/data/$f" ]] || fail "asa prepare: $tmp/data/$f missing or empty"
    done
    grep -Eq 'prepared [0-9]+ files' <<<"$out" || fail "asa prepare: no summary line: $out"
    # The shards do not depend on the number of threads.
    checks=$((checks + 1))
    OMP_NUM_THREADS=1 timeout 60 "$ASA" prepare -o "$tmp/data1" --tokenizer "$tmp/tok.json" --val-fraction 0.1 \
        README.md docs >/dev/null 2>&1 || fail "asa prepare with 1 thread failed"
    cmp -s "$tmp/data/train-00000.shard" "$tmp/data1/train-00000.shard" ||
        fail "asa prepare: train shard differs between 1 and 2 threads"
fi
: >"$tmp/empty.txt"
printf 'abc\0def\n' >"$tmp/binary.txt"
echo '{"model": {"type": "Unigram"}}' >"$tmp/not-bpe.json"
expect_error 'empty.txt: empty file' prepare -o "$tmp/out2" --tokenizer "$tmp/tok.json" "$tmp/empty.txt"
expect_error 'binary.txt: contains NUL' prepare -o "$tmp/out3" --tokenizer "$tmp/tok.json" "$tmp/binary.txt"
expect_error "$missing_re" prepare -o "$tmp/out4" --tokenizer "$missing" README.md
expect_error 'not-bpe.json' prepare -o "$tmp/out5" --tokenizer "$tmp/not-bpe.json" README.md
expect_error 'no-such-input' prepare -o "$tmp/out6" --tokenizer "$tmp/tok.json" "$tmp/no-such-input"
expect_error '--vocab-size' tokenizer train -o "$tmp/t.json" README.md

# End to end on that data: train a few steps, then generate from the run directory.
if [[ -s "$tmp/data/train-00000.shard" ]]; then
    run train --config configs/asa-tiny.json --data "$tmp/data" --out "$tmp/e2e" --steps 4 --batch 2 --seq 32 \
        --log-every 2 --val-every 2 --val-batches 1 --ckpt-every 2
    ((rc == 0)) || fail "asa train --data: exit code $rc: $out"
    grep -q 'val loss' <<<"$out" || fail "asa train --data: no val loss printed: $out"
    [[ -s "$tmp/e2e/loss.svg" && -s "$tmp/e2e/log.jsonl" ]] || fail "asa train --data: loss.svg or log.jsonl missing"
    run generate --model "$tmp/e2e" --prompt "Sparse attention" --max-tokens 12 --seed 2
    ((rc == 0)) || fail "asa generate: exit code $rc: $out"
    grep -Eq 'generation: [0-9]+ tokens, [0-9.]+ tokens/s' <<<"$out" || fail "asa generate: no speed line: $out"
    expect_error 'data/config.json: no such file' generate --model "$tmp/data" --prompt "x"
    expect_error '--max-tokens' generate --model "$tmp/e2e" --prompt "x" --max-tokens -3
fi

# `asa bench attn` on the CPU, tiny shapes: every op of an N layer forward and backward, and a decoding
# step of a G layer, each with its per-op breakdown and finite outputs.
attn_small=(--device cpu --seq 200 --heads 4 --kv-heads 2 --head-dim 32 --block-size 16 --block-counts 4 --window 32
            --repeats 2 --breakdown)
run bench attn "${attn_small[@]}"
if ((rc != 0)); then
    fail "asa bench attn: exit code $rc: $out"
else
    for re in '^  forward: +[0-9.]+ ms +[0-9.]+ GFLOP/s = +[0-9.]+% of gemm +[0-9.]+ GB/s' \
        '^  backward: +[0-9.]+ ms +[0-9.]+ GFLOP/s' '^    attn_slc_bwd +[0-9.]+ ms +[0-9.]+%' \
        '^    select_topk +[0-9.]+ ms' '^  output rms [0-9.e+-]+'; do
        grep -Eq -- "$re" <<<"$out" || fail "asa bench attn: no line matching '$re': $out"
    done
fi
run bench attn "${attn_small[@]}" --decode --kind G --rope-dim 16 --selection-share 4
if ((rc != 0)); then
    fail "asa bench attn --decode: exit code $rc: $out"
else
    grep -Eq '^  decode step: +[0-9.]+ ms +cache bytes read [0-9.]+ KiB' <<<"$out" ||
        fail "asa bench attn --decode: no decode step line: $out"
    grep -Eq '^    attn_slc_decode +[0-9.]+ ms' <<<"$out" || fail "asa bench attn --decode: no breakdown: $out"
fi
run bench attn "${attn_small[@]}" --no-ceilings --kind W
if ((rc != 0)); then
    fail "asa bench attn --no-ceilings: exit code $rc: $out"
else
    grep -q '^  ceilings: not measured (--no-ceilings)$' <<<"$out" || fail "asa bench attn --no-ceilings measured: $out"
    grep -Eq '^  backward: +[0-9.]+ ms +[0-9.]+ GFLOP/s +[0-9.]+ GB/s$' <<<"$out" ||
        fail "asa bench attn --no-ceilings: no backward line without shares: $out"
fi
expect_error 'kv-heads' bench attn --device cpu --heads 6 --kv-heads 4
expect_error 'needs [0-9.]+ GiB on the cpu backend' bench attn --device cpu --seq 16000000

# A model that does not fit is refused before anything is allocated or written, with the bytes needed.
expect_error 'asa-1.3B.json: needs [0-9.]+ GiB on the cpu backend' bench train --config configs/asa-1.3B.json --seq 2000000 --device cpu
expect_error 'asa-1.3B.json: needs [0-9.]+ GiB on the cpu backend' train --config configs/asa-1.3B.json --synthetic copy \
    --seq 1000000 --batch 1 --device cpu --out "$tmp/too-big"
[[ ! -e "$tmp/too-big" ]] || fail "asa train that does not fit created its run directory"

run --help
((rc == 0)) || fail "asa --help: exit code $rc"
grep -q 'usage' <<<"$out" || fail "asa --help: no usage text"

cli_test_end
