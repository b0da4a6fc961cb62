#!/usr/bin/env bash
# Installs sepal's build, test and demo dependencies from Debian 12 packages (idempotent).
# Usage: scripts/install-deps.sh [--bench]   (--bench adds nginx, haproxy, nghttpx, h2load)
set -euo pipefail

pkgs=(
  build-essential cmake ninja-build ccache pkg-config git
  libboost1.81-all-dev libboost-json1.81-dev
  libnghttp2-dev libssl-dev libabsl-dev libyaml-cpp-dev libjemalloc-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev
  iproute2 procps curl nghttp2-client prometheus openssl jq python3 python3-yaml python3-requests
  clang-14 libclang-rt-14-dev libfuzzer-14-dev
  dpkg-dev fakeroot file systemd
  chromium fonts-dejavu-core
)
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(nginx haproxy nghttp2-proxy linux-perf)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
