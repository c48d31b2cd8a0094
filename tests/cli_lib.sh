# Shared by the shell tests that drive the `asa` command (test_cli.sh, test_train.sh, test_eval_cli.sh).
# Source it after setting NAME; it checks $1 is the asa binary, makes $tmp (removed on exit, after
# calling cleanup_extra if the test defines it), and gives the counting helpers below.
# shellcheck shell=bash
ASA=${1:-}
fails=0
checks=0

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# check STATUS MESSAGE: counts a check; fails with MESSAGE when STATUS is not 0.
check() {
    checks=$((checks + 1))
    (($1 == 0)) || fail "$2"
}

if [[ -z "$ASA" || ! -x "$ASA" ]]; then
    echo "$NAME: '$ASA' is not an executable (usage: bash tests/$NAME.sh path/to/asa)"
    exit 1
fi

tmp=$(mktemp -d)
cli_cleanup() {
    declare -F cleanup_extra >/dev/null && cleanup_extra
    rm -rf "$tmp"
}
trap cli_cleanup EXIT

# run ARGS...: runs asa; sets $out (stdout and stderr together) and $rc. The timeout (RUN_TIMEOUT seconds,
# default 600) turns a hang into a failed check instead of a stuck ctest.
run() {
    checks=$((checks + 1))
    out=$(timeout "${RUN_TIMEOUT:-600}" "$ASA" "$@" 2>&1)
    rc=$?
}

# expect_error PATTERN ARGS...: asa ARGS fails cleanly (exit code 1..127, not a signal) and its output
# matches the extended regex PATTERN.
expect_error() {
    local pattern=$1
    shift
    run "$@"
    if ((rc == 0)); then
        fail "asa $*: exit code 0 on bad input"
    elif ((rc >= 128)); then
        fail "asa $*: exit code $rc (killed by a signal)"
    elif ! grep -Eq -- "$pattern" <<<"$out"; then
        fail "asa $*: message does not match '$pattern': $out"
    fi
}

# cli_test_end: the summary line and the exit status.
cli_test_end() {
    echo "$NAME: $checks checks, $fails failures"
    ((fails == 0)) || exit 1
}

# close_losses REF RUN WHAT [TOL]: the runs' log.jsonl have the same steps, with loss, grad_norm, val_loss and
# lr within TOL relative (default 1e-5); prints the largest difference.
close_losses() {
    checks=$((checks + 1))
    local msg
    msg=$(paste -d '\n' "$1/log.jsonl" "$2/log.jsonl" | awk -v tol="${4:-1e-5}" '
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
                if (d > tol * s) { print "step " field(a, "step") ": " keys[i] " " x " vs " y; bad = 1; exit }
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
