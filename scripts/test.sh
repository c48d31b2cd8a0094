#!/usr/bin/env bash
# The test command: installs dependencies, builds, and runs the CPU test suite (ctest label `cpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd "${BUILD_DIR:-build}"
ctest -L cpu --output-on-failure -j "$(nproc)" --timeout 600
