#!/usr/bin/env bash
# Crash safety of `asa train` (issue 9, item 3): a run killed with SIGKILL at 24 seeded random moments
# (in its first steps, in mid-run, during checkpoint writes) and resumed each time ends with a log.jsonl
# identical to an uninterrupted run; after every kill `latest` names a checkpoint that loads and nothing
# outside the run directory changed. Then the faults that must stop a run before or during training
# without losing it: an unwritable run directory, too little free disk space (new run and resume), a
# write error mid-run (a file-size limit: EFBIG) and a full disk mid-run (ENOSPC); and a start killed
# before its first checkpoint, which the same command starts again. The cases that need
# root powers (chattr +i, mounting a small tmpfs) are skipped, visibly, where they are not available.
# Exactness needs only the same thread count in both runs; one thread makes the timing of the kills
# less sensitive to other load on the machine.
# Usage, from the repository root: bash tests/test_crash.sh path/to/asa
set -u

NAME=test_crash
# shellcheck source=tests/cli_lib.sh
source "$(dirname "$0")/cli_lib.sh"
bg_pid=
mnt=
immutable=
cleanup_extra() {
    [[ -n "$bg_pid" ]] && kill -9 "$bg_pid" 2>/dev/null && wait "$bg_pid" 2>/dev/null
    [[ -n "$immutable" ]] && chattr -i "$immutable" 2>/dev/null
    [[ -n "$mnt" ]] && umount "$mnt" 2>/dev/null
    return 0
}
t_start=$(date +%s.%N)

export OMP_NUM_THREADS=1
# Everything asa may read or write besides the run directories lives in the sandbox; TMPDIR too (the
# comparison of two configs that differ writes temp files there).
box="$tmp/sandbox"
mkdir -p "$box/tmpdir"
export TMPDIR="$box/tmpdir"
cat >"$box/tiny.json" <<'EOF'
{
  "model_type": "asa", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "max_position_embeddings": 256, "layer_pattern": "GL", "num_heads": 2,
  "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "kv_lora_rank": 16,
  "latent_groups": 2, "latent_dim": 8, "window_size": 16, "block_size": 8, "block_counts": 3,
  "selection_share": 4
}
EOF
# The kill test's model: a 2048-token vocabulary makes its checkpoint 3.5 MB, so that writing one
# (with its fsyncs) takes several times as long as a step and many kills land in a write.
sed 's/"vocab_size": 64/"vocab_size": 2048/; s/"hidden_size": 32/"hidden_size": 64/' "$box/tiny.json" >"$box/kill.json"

expect_ok() {
    run "$@"
    ((rc == 0)) || fail "asa $*: exit code $rc: $out"
}

# Every log field except the timings; same_losses REF RUN WHAT compares them line by line.
losses() {
    sed -E 's/, "tokens_per_sec": [^,}]*//; s/, "elapsed_s": [^,}]*//' "$1/log.jsonl"
}
same_losses() {
    checks=$((checks + 1))
    if ! diff <(losses "$1") <(losses "$2") >"$tmp/diff.txt"; then
        fail "$3: log.jsonl differs from the uninterrupted run: $(head -c 600 "$tmp/diff.txt")"
    fi
}

# Names, sizes and contents of every file under a directory.
fingerprint() {
    (cd "$1" && find . -print | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}

entries() {  # the names in a directory, sorted, on one line
    (cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | tr '\n' ' ')
}

latest_step() {  # the step checkpoints/latest names, or nothing
    local l
    l=$(cat "$1/checkpoints/latest" 2>/dev/null)
    [[ "$l" =~ ^step-([0-9]{7})$ ]] && echo $((10#${BASH_REMATCH[1]}))
}

# check_latest_loads RUN WHAT: the checkpoint `latest` names is complete and loads. `--steps S` at the
# checkpoint's own step S makes asa load everything (weights, moments, state, config) and stop there
# without changing the run directory.
check_latest_loads() {
    local s before
    s=$(latest_step "$1")
    checks=$((checks + 1))
    if [[ -z "$s" ]]; then
        fail "$2: checkpoints/latest is missing or names no checkpoint"
        return
    fi
    before=$(fingerprint "$1")
    run train --resume --out "$1" --steps "$s"
    if ((rc != 0)) || ! grep -q "already at step $s of $s" <<<"$out"; then
        fail "$2: the checkpoint latest names (step $s) does not load: $out"
    fi
    check "$([[ "$(fingerprint "$1")" == "$before" ]]; echo $?)" "$2: loading the checkpoint changed the run directory"
}

now_ms() { date +%s%3N; }

# A seeded generator (bash's RANDOM sequence differs between versions): sets r to 0..32767.
seed=20261124
rnd() {
    seed=$(((seed * 1103515245 + 12345) % 2147483648))
    r=$((seed / 65536 % 32768))
}

# wait_until COND...: polls (every 5 ms, up to 60 s) until COND holds; fails when the invocation ended.
wait_until() {
    for _ in $(seq 12000); do
        "$@" && return 0
        kill -0 "$bg_pid" 2>/dev/null || return 1
        sleep 0.005
    done
    return 1
}
# The temp files and directories of checkpoint writes (a checkpoint's files, `latest`, an old checkpoint
# being pruned), with their inode and change time: a kill during a write leaves one that was not there
# before the invocation started.
temp_entries() {
    (cd "$crun/checkpoints" 2>/dev/null &&
        find . -maxdepth 1 \( -name '.tmp-*' -o -name '*.tmp.*' \) -printf '%f %i %C@\n' | sort)
}
newer_ckpt() {  # newer_ckpt S: a checkpoint directory of a step after S exists
    local d
    for d in "$crun"/checkpoints/step-*; do
        [[ -d "$d" ]] && ((10#${d##*/step-} > $1)) && return 0
    done
    return 1
}
latest_at_least() { local s; s=$(latest_step "$crun"); [[ -n "$s" ]] && ((s >= $1)); }

# ---- the kill test
STEPS=500
K=(--config "$box/kill.json" --synthetic copy --batch 2 --seq 48 --alphabet 16 --steps "$STEPS" --warmup 0
    --ckpt-every 1 --keep 2 --val-every 50 --val-batches 1 --log-every 1000)
ref="$tmp/ref"
# Its first 20 steps, a checkpoint each, measure this machine's step; the rest checkpoint only at the end
# (checkpoints do not change the log: that is what the test checks).
t0=$(now_ms)
expect_ok train "${K[@]}" --out "$ref" --exit-after 20
t1=$(now_ms)
expect_ok train --resume --out "$ref" --steps 20
t2=$(now_ms)
expect_ok train --resume --out "$ref" --ckpt-every 0 --log-every 1000
check "$(grep -c '"step"' "$ref/log.jsonl" | grep -qx "$STEPS"; echo $?)" "reference run: log.jsonl lacks lines"
step_ms=$(((t1 - t0) / 20 + 1))
((step_ms > 25)) && step_ms=25  # a step measured on a loaded machine must not let kills overrun the run
start_ms=$((t2 - t1))
echo "reference run: $((t1 - t0)) ms for its first 20 steps with a checkpoint each;" \
    "start-up with a checkpoint load $start_ms ms"

# Three kinds of kill moments, all seeded: (1) the first two, within a quarter step of the run directory
# appearing, mostly before the first checkpoint; (2) a quarter of the others at a random time within the
# start-up and first two steps of an invocation (loading, cleaning up, truncating the log); (3) the
# others once the invocation has checkpointed 1 to 20 more steps, at a random time within the next step
# (mostly its checkpoint write, which takes most of a step). Moments of kind 3 are counted in steps, not
# seconds, so that they land at the same points of the run on a fast or a loaded machine.
crun="$tmp/crash"
box_before=$(fingerprint "$box")
kills=0 during_write=0 unpublished=0 before_first=0 attempt=0
for attempt in $(seq 1 24); do
    s0=$(latest_step "$crun")
    temps_before=$(temp_entries)
    if [[ -n "$s0" ]]; then
        "$ASA" train --resume --out "$crun" --log-every 1000 >"$tmp/attempt.out" 2>&1 &
    else
        # Killed before its first checkpoint (or never started): the command that starts the run, with
        # --resume, starts it again.
        "$ASA" train "${K[@]}" --resume --out "$crun" >"$tmp/attempt.out" 2>&1 &
    fi
    bg_pid=$!
    rnd
    if ((attempt <= 2)); then
        kind="after the run directory appeared"
        wait_until test -d "$crun"
        delay_ms=$((step_ms * r / 32768 / 4))
    elif ((r % 4 == 0)); then
        kind="in the start-up"
        rnd
        delay_ms=$(((start_ms + 2 * step_ms) * r / 32768))
    else
        rnd
        target=$((${s0:-0} + 1 + r % 20))
        kind="after step $target"
        wait_until latest_at_least "$target"
        rnd
        delay_ms=$((step_ms * r / 32768))
    fi
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    kill -9 "$bg_pid" 2>/dev/null
    wait "$bg_pid" 2>/dev/null
    rc=$?
    bg_pid=
    checks=$((checks + 1))
    if ((rc != 137)); then
        fail "kill $attempt: the invocation was not killed (exit code $rc): $(tail -3 "$tmp/attempt.out")"
        break
    fi
    kills=$((kills + 1))
    # What the kill interrupted, seen before anything cleans it up.
    s=$(latest_step "$crun")
    what="latest: step ${s:-none}"
    temps=$(temp_entries)
    if [[ -n "$temps" && "$temps" != "$temps_before" ]]; then
        during_write=$((during_write + 1))
        what="during a checkpoint write: $(cut -d' ' -f1 <<<"$temps" | tr '\n' ' ')($what)"
    elif [[ -n "$temps" ]]; then
        what="before the start-up removed $(cut -d' ' -f1 <<<"$temps" | tr '\n' ' ')($what)"
    elif [[ -n "$s" ]] && newer_ckpt "$s"; then
        unpublished=$((unpublished + 1))
        what="between a checkpoint's rename and the update of latest ($what)"
    fi
    echo "kill $attempt, $kind + $delay_ms ms: $what"
    if [[ -z "$s" ]]; then
        before_first=$((before_first + 1))
    else
        check_latest_loads "$crun" "kill $attempt"
    fi
    check "$([[ "$(fingerprint "$box")" == "$box_before" ]]; echo $?)" \
        "kill $attempt: files outside the run directory changed: $(entries "$box/tmpdir")"
done
echo "kills: $kills ($during_write during a checkpoint write, $unpublished between a checkpoint's rename and" \
    "latest, $before_first before the first checkpoint); the run reached step $(latest_step "$crun") of $STEPS"
check "$((kills >= 20 ? 0 : 1))" "only $kills kills landed"
check "$((during_write >= 1 ? 0 : 1))" "no kill landed during a checkpoint write"
expect_ok train --resume --out "$crun" --ckpt-every 0 --log-every 1000
same_losses "$ref" "$crun" "$kills kills and resumes"
check "$([[ "$(latest_step "$crun")" == "$STEPS" ]]; echo $?)" \
    "after the last resume latest names step $(latest_step "$crun")"
kept=$(entries "$crun/checkpoints")
check "$([[ "$kept" =~ ^latest\ step-[0-9]{7}\ $(printf 'step-%07d' "$STEPS")\ $ ]]; echo $?)" \
    "checkpoints left after the last resume: $kept"
check "$([[ "$(fingerprint "$box")" == "$box_before" ]]; echo $?)" "files outside the run directory changed"
t_kill=$(date +%s.%N)

# ---- fault cases on a small run (20 steps, a checkpoint every 5)
F=(--config "$box/tiny.json" --synthetic copy --batch 2 --seq 48 --alphabet 16 --steps 20 --ckpt-every 5
    --keep 2 --log-every 1000)
fref="$tmp/fref"
expect_ok train "${F[@]}" --out "$fref"

# An unwritable run directory, refused before training with the directory's name: a path through a
# regular file (fails for root too), a directory of mode 500 (non-root only) or an immutable one (root).
touch "$tmp/plainfile"
expect_error 'plainfile: exists and is not a directory' train "${F[@]}" --out "$tmp/plainfile/run"
mkdir "$tmp/locked"
if [[ $(id -u) != 0 ]]; then
    chmod 500 "$tmp/locked"
    expect_error 'locked: run directory is not writable: Permission denied' train "${F[@]}" --out "$tmp/locked"
    echo "unwritable run directory (mode 500): $(grep -m1 'not writable' <<<"$out")"
    chmod 700 "$tmp/locked"
elif chattr +i "$tmp/locked" 2>/dev/null; then
    immutable="$tmp/locked"
    expect_error 'locked: run directory is not writable: Operation not permitted' train "${F[@]}" --out "$tmp/locked"
    echo "unwritable run directory (chattr +i, as root): $(grep -m1 'not writable' <<<"$out")"
    # A resume into an unwritable run directory is refused the same way, the run unchanged.
    cp -a "$fref" "$tmp/locked-run"
    chattr +i "$tmp/locked-run" && immutable="$tmp/locked-run" && chattr -i "$tmp/locked"
    before=$(fingerprint "$tmp/locked-run")
    expect_error 'locked-run: run directory is not writable' train --resume --out "$tmp/locked-run" --steps 25
    check "$([[ "$(fingerprint "$tmp/locked-run")" == "$before" ]]; echo $?)" "a refused resume changed the run"
    chattr -i "$tmp/locked-run"
    immutable=
else
    echo "SKIPPED: unwritable run directory: running as root and chattr +i is not available here"
fi

# A start killed before its first checkpoint: nothing to resume, so --resume alone says how to start it
# again, and the command that started it (with or without --resume) starts it anew over the leftovers:
# config.json, a partial log line, an unpublished checkpoint directory, interrupted temp files.
lo="$tmp/leftovers"
mkdir -p "$lo/checkpoints/.tmp-step-0000006"
cp "$fref/config.json" "$lo/"
head -3 "$fref/log.jsonl" >"$lo/log.jsonl"
printf '{"step": 4, "lo' >>"$lo/log.jsonl"
cp -a "$fref/checkpoints/step-0000020" "$lo/checkpoints/step-0000005"
head -c 1000 "$fref/checkpoints/step-0000020/model.safetensors" >"$lo/checkpoints/.tmp-step-0000006/model.safetensors"
touch "$lo/checkpoints/latest.tmp.999" "$lo/.write-test.999" "$lo/loss.svg.tmp.999"
cp -a "$lo" "$tmp/leftovers2"
before=$(fingerprint "$lo")
expect_error 'leftovers: no checkpoint to resume from: the run stopped before its first checkpoint; to start it again' \
    train --resume --out "$lo"
check "$([[ "$(fingerprint "$lo")" == "$before" ]]; echo $?)" "a refused resume changed the leftovers"
expect_ok train "${F[@]}" --resume --out "$lo"
grep -q 'starting anew' <<<"$out" || fail "a restart over leftovers says nothing: $out"
same_losses "$fref" "$lo" "a start over the leftovers of one killed before its first checkpoint"
check "$([[ "$(entries "$lo")" == "checkpoints config.json log.jsonl loss.svg " &&
    "$(entries "$lo/checkpoints")" == "latest step-0000015 step-0000020 " ]]; echo $?)" \
    "leftovers not cleared: $(entries "$lo") / $(entries "$lo/checkpoints")"
expect_ok train "${F[@]}" --out "$tmp/leftovers2"
same_losses "$fref" "$tmp/leftovers2" "a start without --resume over the same leftovers"
# A file asa does not write makes the directory someone else's: refused, untouched.
mkdir -p "$tmp/notarun/checkpoints" && echo notes >"$tmp/notarun/notes.txt"
expect_error 'notarun: run directory exists and is not empty' train "${F[@]}" --out "$tmp/notarun"
expect_error 'notarun: no checkpoint to resume from' train "${F[@]}" --resume --out "$tmp/notarun"
check "$([[ "$(cat "$tmp/notarun/notes.txt")" == notes ]]; echo $?)" "a refused start changed another directory"

# A write error mid-run: under a file-size limit (ulimit -f) between the sizes of model.safetensors and
# optimizer.safetensors, the resumed run trains to its next checkpoint, fails writing the optimizer
# file (EFBIG), exits 1 naming it; latest still names the previous checkpoint, which loads, and a
# resume without the limit finishes the run exactly.
e1="$tmp/efbig"
expect_ok train "${F[@]}" --out "$e1" --exit-after 5
msize=$(stat -c %s "$e1/checkpoints/step-0000005/model.safetensors")
osize=$(stat -c %s "$e1/checkpoints/step-0000005/optimizer.safetensors")
blocks=$(((msize + osize) / 2 / 1024))
ck5=$(fingerprint "$e1/checkpoints/step-0000005")
run_limited() { (ulimit -f "$blocks" && exec "$ASA" "$@"); }
checks=$((checks + 1))
out=$(run_limited train --resume --out "$e1" --log-every 1000 2>&1)
rc=$?
echo "write error mid-run (ulimit -f $blocks, model $msize B, optimizer $osize B): exit $rc:" \
    "$(grep -m1 -i 'error\|fail' <<<"$out")"
if ((rc != 1)) || ! grep -q 'step-0000010/optimizer.safetensors: write failed: File too large' <<<"$out"; then
    fail "ulimit -f: expected exit 1 and a message naming optimizer.safetensors, got $rc: $out"
fi
check "$([[ "$(latest_step "$e1")" == 5 && "$(fingerprint "$e1/checkpoints/step-0000005")" == "$ck5" ]]; echo $?)" \
    "ulimit -f: latest or the previous checkpoint changed"
check "$([[ -z "$(find "$e1/checkpoints" -name 'step-0000010*' -o -name '*.tmp*')" ]]; echo $?)" \
    "ulimit -f: a partial checkpoint or temp file was left: $(entries "$e1/checkpoints")"
check_latest_loads "$e1" "ulimit -f"
expect_ok train --resume --out "$e1" --log-every 1000
same_losses "$fref" "$e1" "a write error at step 10 then --resume"

# Too little free disk space, and a full disk mid-run, on a small tmpfs (needs mount rights).
mkdir "$tmp/small"
if mount -t tmpfs -o size=4m tmpfs "$tmp/small" 2>/dev/null; then
    mnt="$tmp/small"
    avail() { df -B1 --output=avail "$mnt" | tail -1 | tr -d ' '; }
    fill_to() {  # fill_to BYTES: leaves about BYTES free
        rm -f "$mnt/filler"
        local a
        a=$(avail)
        ((a > $1)) && head -c $((a - $1)) /dev/zero >"$mnt/filler" 2>/dev/null
    }
    ckpt=$(du -sb "$fref/checkpoints/step-0000020" | cut -f1)
    fill_to $((ckpt * 3 / 2))
    msg="small/new: not enough free disk space for checkpoints: needs [0-9]+ bytes \([0-9.]+ KiB: twice the [0-9]+"
    msg+=" bytes of one checkpoint of this model\), but the file system of .*small has [0-9]+ bytes \([0-9.]+ KiB\) free"
    expect_error "$msg" \
        train "${F[@]}" --out "$mnt/new"
    echo "full disk before a new run: $(grep -m1 'free disk' <<<"$out")"
    check "$([[ ! -e "$mnt/new" ]]; echo $?)" "a refused new run created its directory"
    rm -f "$mnt/filler"
    s1="$mnt/run"
    expect_ok train "${F[@]}" --out "$s1" --exit-after 5
    fill_to $((ckpt * 3 / 2))
    before=$(fingerprint "$s1")
    expect_error 'small/run: not enough free disk space for checkpoints' train --resume --out "$s1" --log-every 1000
    echo "full disk before a resume: $(grep -m1 'free disk' <<<"$out")"
    check "$([[ "$(fingerprint "$s1")" == "$before" ]]; echo $?)" "a refused resume changed the run directory"
    # ENOSPC mid-run: once the run has checkpointed a few steps (one a step), another writer fills the disk
    # and keeps it full (pruned checkpoints free space that a next one would fit in).
    rm -f "$mnt/filler"
    "$ASA" train --resume --out "$s1" --steps 4000 --ckpt-every 1 --log-every 1000 >"$tmp/enospc.out" 2>&1 &
    bg_pid=$!
    for _ in $(seq 3000); do
        s=$(latest_step "$s1")
        [[ -n "$s" ]] && ((s >= 8)) && break
        sleep 0.01
    done
    for _ in $(seq 6000); do
        cat /dev/zero >>"$mnt/filler" 2>/dev/null
        kill -0 "$bg_pid" 2>/dev/null || break
        sleep 0.005
    done
    kill -9 "$bg_pid" 2>/dev/null  # still running after a minute: fails below
    wait "$bg_pid"
    rc=$?
    bg_pid=
    checks=$((checks + 1))
    echo "full disk mid-run: exit $rc: $(grep -m1 'No space' "$tmp/enospc.out")"
    if ((rc != 1)) || ! grep -q 'No space left on device' "$tmp/enospc.out"; then
        fail "ENOSPC: expected exit 1 and 'No space left on device', got $rc: $(tail -3 "$tmp/enospc.out")"
    fi
    check "$([[ -z "$(find "$s1/checkpoints" -name '.tmp-*' -o -name '*.tmp.*')" ]]; echo $?)" \
        "ENOSPC: temp files left: $(entries "$s1/checkpoints")"
    s=$(latest_step "$s1")
    rm -f "$mnt/filler"
    check_latest_loads "$s1" "ENOSPC"
    # The run goes on from that checkpoint exactly: compare with an uninterrupted run to the same step.
    expect_ok train --resume --out "$s1" --steps $((s + 5)) --log-every 1000
    sref="$tmp/sref"
    expect_ok train "${F[@]}" --out "$sref" --exit-after 5
    expect_ok train --resume --out "$sref" --steps 4000 --ckpt-every 1 --exit-after $((s - 5)) --log-every 1000
    expect_ok train --resume --out "$sref" --steps $((s + 5)) --log-every 1000
    same_losses "$sref" "$s1" "ENOSPC at step $((s + 1)) then --resume"
    umount "$mnt" && mnt=
else
    echo "SKIPPED: free-space refusal and ENOSPC mid-run: cannot mount a small tmpfs here (no mount rights)"
fi

# A model whose checkpoint (about 4 TB) no ordinary disk holds is refused before anything is allocated.
sed 's/"hidden_size": 2048/"hidden_size": 16384/; s/"intermediate_size": 5632/"intermediate_size": 53248/;
     s/"num_hidden_layers": 24/"num_hidden_layers": 128/' configs/asa-1.3B.json >"$tmp/huge.json"
run train --config "$tmp/huge.json" --synthetic copy --out "$tmp/huge-run"
checks=$((checks + 1))
if grep -q 'not enough free disk space' <<<"$out"; then
    ((rc == 1)) || fail "huge model: exit code $rc"
    echo "huge model: $(grep -m1 'free disk' <<<"$out")"
elif grep -q 'needs .* GiB on the cpu backend' <<<"$out"; then
    echo "SKIPPED: huge model: this file system has room for its 7.6 TiB of checkpoints (memory check refused it)"
else
    fail "huge model: neither the disk nor the memory check refused it: $out"
fi
check "$([[ ! -e "$tmp/huge-run" ]]; echo $?)" "a refused new run created its directory"

t_end=$(date +%s.%N)
awk -v a="$t_start" -v b="$t_kill" -v c="$t_end" \
    'BEGIN { printf "time: kill test %.1f s, fault cases %.1f s\n", b - a, c - b }'
cli_test_end
