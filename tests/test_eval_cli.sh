#!/usr/bin/env bash
# `asa eval` end to end on a model trained for a few steps here: every task runs on small hand-made files,
# prints its table and writes a JSON results file (and S-NIAH its SVG grid); bad input fails cleanly with
# a message naming the file and line. Usage, from the repository root: bash tests/test_eval_cli.sh path/to/asa
set -u
# One thread: every shape here is tiny, and OpenMP's spin-waiting makes token-by-token decoding orders of
# magnitude slower when the cores are shared with other jobs (ctest -j).
export OMP_NUM_THREADS=1

NAME=test_eval_cli
RUN_TIMEOUT=120
# shellcheck source=tests/cli_lib.sh
source "$(dirname "$0")/cli_lib.sh"

# expect_ok NAME: the last run succeeded.
expect_ok() {
    ((rc == 0)) || fail "$1: exit code $rc: $out"
}

# A tiny model: tokenizer and shards from this checkout's text, a few training steps.
run tokenizer train --vocab-size 400 -o "$tmp/tok.json" README.md docs/design.md
expect_ok "asa tokenizer train"
run prepare -o "$tmp/data" --tokenizer "$tmp/tok.json" --val-fraction 0.1 README.md docs
expect_ok "asa prepare"
run train --config configs/asa-tiny.json --data "$tmp/data" --out "$tmp/run" --steps 2 --batch 2 --seq 32 \
    --log-every 1 --val-every 2 --val-batches 1
expect_ok "asa train"

# Perplexity over a raw text and over a token shard, non-overlapping and strided.
head -c 3000 README.md >"$tmp/text.txt"
run eval ppl --model "$tmp/run" --data "$tmp/text.txt" --context 64 --out "$tmp/ppl.json"
expect_ok "asa eval ppl (text)"
grep -q '"metric":[[:space:]]*"word_perplexity"' "$tmp/ppl.json" 2>/dev/null || fail "ppl.json: no word_perplexity: $(cat "$tmp/ppl.json" 2>&1)"
grep -Eq '^ppl +perplexity +[0-9.]+' <<<"$out" || fail "asa eval ppl: no table row: $out"
run eval ppl --model "$tmp/run" --data "$tmp/data/val-00000.shard" --context 64 --stride 16 --out "$tmp/ppl2.json"
expect_ok "asa eval ppl (shard, stride)"
grep -q '"context_length":[[:space:]]*64' "$tmp/ppl2.json" 2>/dev/null || fail "ppl2.json: no context_length 64"

# Multiple choice in an original and an alternative layout, LAMBADA.
cat >"$tmp/arc.jsonl" <<'J'
{"id": "Q1", "question": {"stem": "Which is a gas?", "choices": [{"text": "steam", "label": "A"}, {"text": "ice", "label": "B"}]}, "answerKey": "A"}
{"id": "Q2", "question": {"stem": "Which is wet?", "choices": [{"text": "water", "label": "A"}, {"text": "sand", "label": "B"}, {"text": "dust", "label": "C"}]}, "answerKey": "A"}
J
run eval arc_easy --model "$tmp/run" --data "$tmp/arc.jsonl" --out "$tmp/arc.json"
expect_ok "asa eval arc_easy"
for m in acc acc_norm; do
    grep -q "\"metric\":[[:space:]]*\"$m\"" "$tmp/arc.json" 2>/dev/null || fail "arc.json: no $m"
done
grep -q '"n":[[:space:]]*2' "$tmp/arc.json" 2>/dev/null || fail "arc.json: n is not 2"
printf 'Roof: A man is on a roof. he\n1\nfalls.\nclimbs down.\nsits.\nsings.\n' >"$tmp/hs.txt"
run eval hellaswag --model "$tmp/run" --data "$tmp/hs.txt" --out "$tmp/hs.json"
expect_ok "asa eval hellaswag (llama.cpp text)"
printf '{"goal": "g", "sol1": "a b", "sol2": "c"}\n{"goal": "h", "sol1": "d", "sol2": "e f"}\n' >"$tmp/piqa.jsonl"
printf '0\n1\n' >"$tmp/piqa.lst"
run eval piqa --model "$tmp/run" --data "$tmp/piqa.jsonl" --labels "$tmp/piqa.lst" --limit 1 --out "$tmp/piqa.json"
expect_ok "asa eval piqa --limit 1"
grep -q '"n":[[:space:]]*1' "$tmp/piqa.json" 2>/dev/null || fail "piqa.json: --limit 1 did not give n 1"
printf '{"text": "the cat sat on the mat"}\n{"text": "a dog ran in the park"}\n' >"$tmp/lambada.jsonl"
run eval lambada --model "$tmp/run" --data "$tmp/lambada.jsonl" --out "$tmp/lambada.json"
expect_ok "asa eval lambada"
grep -q '"task":[[:space:]]*"lambada"' "$tmp/lambada.json" 2>/dev/null || fail "lambada.json: no lambada rows"

# S-NIAH-1 and -2 at two short lengths.
run eval niah --model "$tmp/run" --haystack README.md --lengths 320,512 --depths 2 --answer-tokens 8 --out "$tmp/niah.json"
expect_ok "asa eval niah"
grep -q 'acc@512' "$tmp/niah.json" 2>/dev/null || fail "niah.json: no acc@256"
grep -q 'niah_single_3' "$tmp/niah.json" 2>/dev/null || fail "niah.json: no S-NIAH-3 with --haystack"
[[ -s "$tmp/niah.json.svg" ]] && grep -q '<svg' "$tmp/niah.json.svg" || fail "niah: no SVG grid"

printf '{"query": "Question: q", "choices": ["a", "b"], "gold": 0}\n{"query": 3}\n' >"$tmp/bad.jsonl"
expect_error 'bad.jsonl:2: key .query.' eval arc_challenge --model "$tmp/run" --data "$tmp/bad.jsonl" --out "$tmp/x.json"
expect_error 'unknown task' eval frobnicate --model "$tmp/run" --data "$tmp/bad.jsonl"
expect_error '--data' eval piqa --model "$tmp/run"
expect_error 'labels' eval piqa --model "$tmp/run" --data "$tmp/piqa.jsonl"
expect_error 'no-such-dir' eval lambada --model "$tmp/no-such-dir" --data "$tmp/lambada.jsonl"
expect_error 'haystack' eval niah_single_2 --model "$tmp/run" --lengths 256
[[ ! -e "$tmp/x.json" ]] || fail "a failed eval wrote its results file"

cli_test_end
