#!/usr/bin/env bash
# The sanitizer job of CI. Builds the library, the asa command and the CPU tests with AddressSanitizer and
# UndefinedBehaviorSanitizer (a UBSan finding stops the program) in build-sanitize/, without the CUDA
# backend; runs the CPU test suite there with LeakSanitizer on; then runs train -> resume -> generate ->
# eval (every eval format) and a set of bad inputs through the sanitized asa, each of which must exit
# cleanly (0, or 1 with its message for a bad input) and leak nothing, error paths included.
# Usage: scripts/sanitize.sh   (installs what is missing, like scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build="${SANITIZE_BUILD_DIR:-build-sanitize}"
BUILD_DIR="$build" CMAKE_ARGS="-DASA_SANITIZE=ON -DASA_CUDA=OFF" bash scripts/setup.sh

# Leaks are errors everywhere. Suppressed: only allocations runtime libraries keep until exit (Open MPI,
# under mpirun), listed with the evidence in scripts/lsan-suppressions.txt.
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_string_checks=1"
export LSAN_OPTIONS="suppressions=$root/scripts/lsan-suppressions.txt:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1"
cd "$build"
ctest -L cpu -E '^test_dist$' --output-on-failure -j "$(nproc)" --timeout 900
# Under mpirun the leaks that Open MPI keeps are only recognisable with full malloc stacks (its components
# are unloaded at exit); the slower unwinding is used for that test alone.
if ctest -N -R '^test_dist$' | grep "Total Tests: 1" >/dev/null; then
    ASAN_OPTIONS="$ASAN_OPTIONS:fast_unwind_on_malloc=0" ctest -R '^test_dist$' --output-on-failure --timeout 900
fi
cd "$root"

asa="$(cd "$build" && pwd)/asa"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 runs=0
export OMP_NUM_THREADS=2

# run WANT PATTERN ARGS...: runs the sanitized asa; its exit code must be WANT, its output must match the
# extended regex PATTERN, and no sanitizer may have reported anything (a leak report exits with 23).
run() {
    local want=$1 pattern=$2 out rc
    shift 2
    runs=$((runs + 1))
    out=$(timeout 600 "$asa" "$@" 2>&1) && rc=0 || rc=$?
    if [[ $rc -ne $want ]] || ! grep -Eq -- "$pattern" <<<"$out" ||
        grep -Eq "Sanitizer|runtime error" <<<"$out"; then
        echo "sanitize: FAIL (exit code $rc, expected $want): asa $*" >&2
        tail -n 60 <<<"$out" >&2
        fails=$((fails + 1))
    elif [[ $want -ne 0 ]]; then
        echo "sanitize: refused (exit $rc): asa ${1:-} ${2:-}: $(grep -Em1 -- "$pattern" <<<"$out" | cut -c1-160)"
    fi
}

# A tiny model end to end: tokenizer, shards, 4 steps stopped at 2 and resumed, generation, every eval.
run 0 "" tokenizer train --vocab-size 320 -o "$tmp/tok.json" README.md
run 0 "" prepare -o "$tmp/data" --tokenizer "$tmp/tok.json" --val-fraction 0.1 README.md docs
train_args=(--config configs/asa-tiny.json --data "$tmp/data" --out "$tmp/run" --steps 4 --batch 2 --seq 32
    --log-every 1 --val-every 2 --val-batches 1 --ckpt-every 2)
run 0 "" train "${train_args[@]}" --exit-after 2
run 0 "" train --resume --out "$tmp/run"
run 0 "" generate --model "$tmp/run" --prompt "Call me" --max-tokens 8 --seed 1
head -c 2000 README.md >"$tmp/text.txt"
run 0 "" eval ppl --model "$tmp/run" --data "$tmp/text.txt" --context 32 --out "$tmp/ppl.json"
printf '{"text": "the cat sat on the mat"}\n{"text": "a dog ran in the park"}\n' >"$tmp/lambada.jsonl"
run 0 "" eval lambada --model "$tmp/run" --data "$tmp/lambada.jsonl" --out "$tmp/lambada.json"
printf '{"query": "Question: q", "choices": ["a", "b"], "gold": 0}\n' >"$tmp/arc.jsonl"
run 0 "" eval arc_easy --model "$tmp/run" --data "$tmp/arc.jsonl" --out "$tmp/arc.json"
printf '{"activity_label": "Roof", "ctx_a": "A man is on a roof.", "ctx_b": "he", "endings": ["falls.", "sits."], %s\n' \
    '"label": 0}' >"$tmp/hs.jsonl"
run 0 "" eval hellaswag --model "$tmp/run" --data "$tmp/hs.jsonl" --out "$tmp/hs.json"
printf '{"goal": "g", "sol1": "a b", "sol2": "c"}\n' >"$tmp/piqa.jsonl"
printf '1\n' >"$tmp/piqa.lst"
run 0 "" eval piqa --model "$tmp/run" --data "$tmp/piqa.jsonl" --labels "$tmp/piqa.lst" --out "$tmp/piqa.json"
run 0 "" eval niah --model "$tmp/run" --haystack README.md --lengths 320 --depths 2 --answer-tokens 8 \
    --out "$tmp/niah.json"

# Bad inputs: each refused with exit code 1 and a message that names the file, leaking nothing.
ckpt=$(cat "$tmp/run/checkpoints/latest")
[[ $ckpt == /* ]] || ckpt="$tmp/run/checkpoints/$ckpt"
mkdir -p "$tmp/bad"
deep() { printf '%s' "$1"; head -c 10000 /dev/zero | tr '\0' '['; head -c 10000 /dev/zero | tr '\0' ']'; printf '%s\n' "$2"; }
# config.json nested 10,000 deep
deep '{"vocab_size": ' '}' >"$tmp/bad/deep-config.json"
run 1 "deep-config.json: JSON nested more than 1000 levels deep" train --config "$tmp/bad/deep-config.json" \
    --synthetic copy --out "$tmp/bad/run1"
# tokenizer.json nested 10,000 deep, and with 10M merges (60 MB)
deep '{"model": ' '}' >"$tmp/bad/deep-tok.json"
run 1 "deep-tok.json: JSON nested more than 1000 levels deep" tokenizer encode --tokenizer "$tmp/bad/deep-tok.json" x
{ printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ['; { yes '"a a",' || true; } | head -n 9999999 | tr -d '\n'
  printf '"a a"]}}\n'; } >"$tmp/bad/10M-merges.json"
run 1 "10M-merges.json: a JSON array or object with more than 2097152 elements" \
    tokenizer encode --tokenizer "$tmp/bad/10M-merges.json" x
# a tiktoken file of 10M ranks (70 MB)
{ yes 'QQ== 0' || true; } | head -n 10000000 >"$tmp/bad/10M.tiktoken"
run 1 "10M.tiktoken: 10000000 lines, more than the limit of 2097152 ranks" \
    prepare -o "$tmp/bad/d" --tiktoken "$tmp/bad/10M.tiktoken" README.md
rm -f "$tmp/bad/10M-merges.json" "$tmp/bad/10M.tiktoken"
# model directories: copies of the run with one file replaced
bad_model() { rm -rf "$tmp/bad/model" && cp -r "$tmp/run" "$tmp/bad/model" && echo "$tmp/bad/model/checkpoints/$(basename "$ckpt")"; }
m=$(bad_model)
printf "\x00\x00\x40\x06\x00\x00\x00\x00{}" >"$m/model.safetensors"  # a header length of 100 MiB,
truncate -s 8M "$m/model.safetensors"  # in a file large enough for the model's 2.09M parameters
run 1 "model.safetensors: header length 104857600 is over the limit of 67108864 bytes" \
    generate --model "$tmp/bad/model" --prompt x --max-tokens 2
m=$(bad_model)
sed -i 's/"vocab_size": *[0-9]*/"vocab_size": 1000000000/' "$m/config.json"
run 1 "model.safetensors: [0-9]+ bytes cannot hold the [0-9]+ parameters that .*config.json declares" \
    generate --model "$tmp/bad/model" --prompt x --max-tokens 2
m=$(bad_model)
deep '{"step": ' '}' >"$m/trainer_state.json"
run 1 "trainer_state.json: JSON nested more than 1000 levels deep" train --resume --out "$tmp/bad/model"
m=$(bad_model)
dir=$(head -c 5000 /dev/zero | tr '\0' 'd')
sed -i "s|\"data_dir\":[[:space:]]*\"[^\"]*\"|\"data_dir\": \"/$dir\"|" "$m/trainer_state.json"
run 1 "trainer_state.json: key 'data_dir': longer than 4095 bytes" train --resume --out "$tmp/bad/model"
m=$(bad_model)
head -c 100 "$m/model.safetensors" >"$m/model.safetensors.cut" && mv "$m/model.safetensors.cut" "$m/model.safetensors"
run 1 "model.safetensors: 100 bytes cannot hold the [0-9]+ parameters" generate --model "$tmp/bad/model" --prompt x --max-tokens 2
# eval files: a record nested 10,000 deep, a record of 5000 choices, a 4 MB line
deep '{"text": ' '}' >"$tmp/bad/deep.jsonl"
run 1 "deep.jsonl:1: JSON nested more than 1000 levels deep" eval lambada --model "$tmp/run" --data "$tmp/bad/deep.jsonl" \
    --out "$tmp/bad/x.json"
{ printf '{"query": "Question: q", "gold": 0, "choices": ["c"'; { yes ',"c"' || true; } | head -n 4999 | tr -d '\n'; printf ']}\n'; } \
    >"$tmp/bad/wide.jsonl"
run 1 "wide.jsonl:1: a JSON array or object with more than 1024 elements" \
    eval arc_easy --model "$tmp/run" --data "$tmp/bad/wide.jsonl" --out "$tmp/bad/x.json"
{ printf '{"text": "'; head -c 4000000 /dev/zero | tr '\0' 'x'; printf '"}\n'; } >"$tmp/bad/long.jsonl"
run 1 "long.jsonl:1: key 'text': no last word" eval lambada --model "$tmp/run" --data "$tmp/bad/long.jsonl" \
    --out "$tmp/bad/x.json"
# a config string far over its fixed-size field, and a token shard cut short
pattern=$(head -c 100000 /dev/zero | tr '\0' 'G')
sed "s/\"layer_pattern\": *\"[A-Z]*\"/\"layer_pattern\": \"$pattern\"/" configs/asa-tiny.json >"$tmp/bad/long-config.json"
run 1 'long-config.json: key "layer_pattern": longer than' train --config "$tmp/bad/long-config.json" \
    --synthetic copy --out "$tmp/bad/run2"
cp -r "$tmp/data" "$tmp/bad/data"
shard=$(ls "$tmp/bad/data"/train-*.shard | head -n 1)
head -c 1000 "$shard" >"$shard.cut" && mv "$shard.cut" "$shard"
run 1 "$(basename "$shard")" train --config configs/asa-tiny.json --data "$tmp/bad/data" --out "$tmp/bad/run3" --steps 1
# numeric options out of range: a usage error, exit code 2
run 2 "steps" train "${train_args[@]}" --steps 1e99

if ((fails)); then
    echo "sanitize: $fails of $runs runs of the sanitized asa failed" >&2
    exit 1
fi
echo "sanitize: CPU tests and $runs runs of the sanitized asa (train, resume, generate, eval, bad inputs): no errors, no leaks"
