#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, ASan + UBSan) in build-fuzz/ and runs each for N seconds
# (default 10) on its seed corpus plus its saved crashing inputs. New corpus entries go to a scratch
# directory, so the checked-in seeds stay as they are; a crash stops with the target's report, and the
# crashing input is left in build-fuzz/crashes/<target>/ to be moved to fuzz/regressions/<target>/.
# FUZZ_RUNS=N also stops each target after N executions (long runs: FUZZ_RUNS=10000000 scripts/fuzz.sh 1800).
# Usage: scripts/fuzz.sh [seconds] [target...]   (installs clang and libclang-rt-14-dev when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
shift || true
build="${FUZZ_BUILD_DIR:-build-fuzz}"
# libFuzzer and the sanitizer runtimes of clang 14 (Debian 12) are in libclang-rt-14-dev.
missing=""
for p in clang libclang-rt-14-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "fuzz: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
mkdir -p "$build"
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DASA_FUZZ=ON >"$build/build.log" 2>&1; then
    cat "$build/build.log" >&2
    exit 1
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi
if ! cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >>"$build/build.log" 2>&1; then
    tail -n 40 "$build/build.log" >&2
    echo "fuzz: build failed (log: $build/build.log)" >&2
    exit 1
fi
for t in "${targets[@]}"; do
    work="$build/corpus/$t" crashes="$build/crashes/$t"
    mkdir -p "$work" "$crashes"
    dirs=("$work" "fuzz/corpus/$t")
    [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
    log="$build/$t.log"
    # -close_fd_mask=1 closes stdout (nothing of interest there); messages and sanitizer reports go to
    # stderr, kept in the log. rss_limit_mb: a reader that allocates on a size the input claims counts as
    # a finding.
    if ! "$build/$t" -max_total_time="$secs" -runs="${FUZZ_RUNS:--1}" -rss_limit_mb=2048 -timeout=10 -close_fd_mask=1 \
        -artifact_prefix="$crashes/" -print_final_stats=1 "${dirs[@]}" >"$log" 2>&1; then
        grep -av "^asa " "$log" | tail -n 60 >&2
        echo "fuzz: $t failed; the input is in $crashes/, the log in $log" >&2
        exit 1
    fi
    runs=$(grep -a "stat::number_of_executed_units" "$log" | awk '{print $2}')
    echo "fuzz: $t: ${runs:-?} runs, no crash"
done
echo "fuzz: no crashes"
