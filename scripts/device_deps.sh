#!/usr/bin/env bash
# Run on this (build) machine: downloads the Debian packages that the GPU machine lacks (cJSON, PCRE2,
# OpenBLAS with its Fortran runtime, pkg-config) into .deps/, which `run` carries there
# (carry [".deps"]); scripts/device_build.sh unpacks them under /tmp/deps. Nothing is installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.deps/' .git/info/exclude 2>/dev/null || echo '/.deps/' >>.git/info/exclude
mkdir -p .deps
cd .deps
rm -f ./*.deb
pkgs="libcjson1 libcjson-dev
      libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libpcre2-dev
      libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0
      pkgconf pkgconf-bin libpkgconf3"
# shellcheck disable=SC2086
apt-get download $pkgs
ls -l ./*.deb
du -sh .
