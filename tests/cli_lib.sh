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
