#!/usr/bin/env bash
# Installs what asa needs to build on Debian/Ubuntu (sudo when not root), then configures and builds
# into build/. Safe to run again: it only installs what is missing and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="build-essential cmake pkg-config libopenblas-openmp-dev libcjson-dev libpcre2-dev libopenmpi-dev openmpi-bin"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

BUILD_DIR="${BUILD_DIR:-build}"
mkdir -p "$BUILD_DIR"
log="$BUILD_DIR/build.log"
if ! { cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" ${CMAKE_ARGS:-} &&
       cmake --build "$BUILD_DIR" -j "$(nproc)"; } >"$log" 2>&1; then
    cat "$log"
    echo "setup: build failed (log: $log)" >&2
    exit 1
fi
cuda=$(grep -q "asa: CUDA backend ON" "$log" && echo "with" || echo "without")
echo "setup: built $BUILD_DIR/asa ($cuda the CUDA backend)"
