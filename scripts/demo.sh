#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds, and trains asa-tiny (ASA: a
# global sparse layer alternating with a local MLA window layer) on the built-in copy task on the CPU,
# printing the loss as it falls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./build/asa info --config configs/asa-tiny.json --context 2048
echo
./build/asa train --config configs/asa-tiny.json --synthetic copy "$@"
