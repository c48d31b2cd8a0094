#!/usr/bin/env bash
# Run on the GPU machine (through `run` with carry [".deps"]): unpacks the packages that
# scripts/device_deps.sh downloaded into /tmp/deps (never into /), points pkg-config and CMake at them,
# builds with the CUDA backend into build-device/ and runs the GPU tests, then the CPU tests.
# Writes /tmp/deps/env.sh (LD_LIBRARY_PATH) for commands that run the programs afterwards.
# The CPU tests run with ASA_DEVICE=cpu (the asa command would pick the GPU otherwise).
# SKIP_CPU_TESTS=1 skips `ctest -L cpu`, SKIP_GPU_TESTS=1 the GPU tests, GPU_TESTS=REGEX runs only the GPU
# tests whose names match, KEEP_BUILD=1 reuses build-device/ (see below); logs go to $OUT when it is set.
set -uo pipefail
cd "$(dirname "$0")/.."
DEPS=/tmp/deps
BUILD=build-device
ARCH=x86_64-linux-gnu
LOG=${OUT:-/tmp}
ls .deps/*.deb >/dev/null 2>&1 || { echo "device_build: no .deps/*.deb (run scripts/device_deps.sh here and carry .deps)"; exit 1; }
mkdir -p "$DEPS"
for f in .deps/*.deb; do dpkg -x "$f" "$DEPS"; done
# The .pc files name /usr; move them under the unpacked tree.
for pc in "$DEPS"/usr/lib/$ARCH/pkgconfig/*.pc "$DEPS"/usr/lib/$ARCH/openblas-openmp/pkgconfig/*.pc; do
    sed -i -E "s#^(prefix|exec_prefix|libdir|includedir)=/usr#\1=$DEPS/usr#" "$pc"
done
export PKG_CONFIG_PATH="$DEPS/usr/lib/$ARCH/pkgconfig:$DEPS/usr/lib/$ARCH/openblas-openmp/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$DEPS/usr/lib/$ARCH:$DEPS/usr/lib/$ARCH/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
pkgcfg=()
if ! command -v pkg-config >/dev/null; then
    pkgcfg=(-DPKG_CONFIG_EXECUTABLE="$DEPS/usr/bin/pkgconf")
fi
cat >"$DEPS/env.sh" <<ENV
export LD_LIBRARY_PATH="$LD_LIBRARY_PATH"
ENV
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nvcc --version | tail -1
cmake --version | head -1

t0=$(date +%s)
# A warm machine keeps build-device/ between calls, but the copied sources keep the mtimes they had here,
# which can be older than objects built there from an earlier copy: make stays silent and the binaries
# are stale. Build from scratch unless told otherwise.
[ "${KEEP_BUILD:-0}" = 1 ] || rm -rf "$BUILD"
if ! { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DASA_DEPS_ROOT="$DEPS" "${pkgcfg[@]}" &&
       cmake --build "$BUILD" -j "$(nproc)"; } >"$LOG/device_build.log" 2>&1; then
    tail -60 "$LOG/device_build.log"
    echo "device_build: build failed (log: $LOG/device_build.log)"
    exit 1
fi
echo "device_build: built $BUILD in $(( $(date +%s) - t0 )) s"
grep -E "asa: (CUDA backend|MPI|NCCL|cuDNN)|OpenBLAS:" "$LOG/device_build.log"

rc=0
if [ "${SKIP_GPU_TESTS:-0}" != 1 ]; then
    (cd "$BUILD" && ctest -L gpu ${GPU_TESTS:+-R "$GPU_TESTS"} --output-on-failure --timeout 300) 2>&1 |
        tee "$LOG/ctest_gpu.log" | tail -40 || rc=1
fi
if [ "${SKIP_CPU_TESTS:-0}" != 1 ]; then
    (cd "$BUILD" && ASA_DEVICE=cpu ctest -L cpu --output-on-failure -j "$(nproc)" --timeout 300) 2>&1 | tee "$LOG/ctest_cpu.log" | tail -25 || rc=1
fi
exit $rc
