#!/usr/bin/env bash
# Fresh-machine setup for the demo and the tests. System packages (QEMU 10, libvirt, the test
# guest's kernel) need root: run directly when we are root (containers, CI), through sudo only
# when we are not. npm ci runs as the calling user, so node_modules/ and build/ stay theirs.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "setup: '$*' needs root: run this script as root, or install sudo" >&2
    exit 1
  fi
}

# --bench: libvirt and fio too; npm test runs the bench's smoke test (test/bench-smoke.test.ts).
as_root bash scripts/install-qemu.sh --bench
# The addon links the system libzstd for compressed images (without it, it builds without them).
dpkg -s libzstd-dev >/dev/null 2>&1 || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libzstd-dev >/dev/null
as_root bash scripts/build-test-guest.sh "$PWD/.cache/guest"
npm ci --no-audit --no-fund
