#!/usr/bin/env bash
# deps.sh -- install the Debian 12 packages sensorflow needs, when missing.
# Quiet when everything is there; otherwise says what it installs and runs
# apt-get (through sudo when not root).
set -euo pipefail

# libclang-rt-14-dev is libFuzzer (clang only recommends it), llvm gives
# sanitizer reports their function names and lines (llvm-symbolizer),
# debootstrap makes the compose test's base image, gnuplot-nox draws make bench's plot.
PKGS=(
  build-essential pkg-config clang libclang-rt-14-dev llvm
  libevent-dev libmosquitto-dev libpaho-mqtt-dev libjansson-dev libpq-dev libcmocka-dev libjemalloc-dev
  postgresql mosquitto mosquitto-clients haproxy
  python3 python3-pytest curl procps iproute2 debootstrap gnuplot-nox
)

missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing missing Debian packages: ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: not root and no sudo: install ${missing[*]} yourself" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The packaged servers must not start system-wide instances: the stack and the
# tests start their own, on their own ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
echo "deps: done" >&2
