#!/usr/bin/env bash
# Builds the addon's N-API prebuild (prebuilds/linux-x64/) the way `npm run prebuild` does
# (prebuildify --napi --strip, node-gyp, binding.gyp), but inside a Debian 11 root made by
# debootstrap: its glibc 2.31 is the oldest Debian's mirror still serves, so the prebuild needs
# no glibc symbol newer than 2.31 and loads on Debian 11+, Ubuntu 20.04+ hosts with no compiler.
# (RHEL 8's glibc 2.28 is older: there `npm install` compiles from source, which works on 2.28.)
# The root is cached in .cache/bullseye-root; this host's Node binary and headers are bind-mounted
# into it (official Node builds need only glibc 2.28). Needs root (debootstrap, chroot, mount).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=$repo/.cache/bullseye-root
[ "$(id -u)" = 0 ] || { echo "prebuild-old-glibc: must run as root (debootstrap, chroot)" >&2; exit 1; }

# libzstd-dev: the prebuild links the system libzstd (libzstd1, which every Debian and Ubuntu
# has: dpkg itself needs it) for compressed images.
if [ ! -x "$root/usr/bin/g++" ] || [ ! -f "$root/usr/include/zstd.h" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  # The mirror comes from the machine's own apt sources: no host name lives in this repository.
  uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  [ -n "$uri" ] || { echo "prebuild-old-glibc: no URIs: line in /etc/apt/sources.list.d/debian.sources" >&2; exit 1; }
  rm -rf "$root"
  debootstrap --variant=minbase --include=g++,make,python3,libzstd-dev bullseye "$root" "$uri" >/dev/null
fi

node_bin=$(command -v node)
node_prefix=$(cd "$(dirname "$(readlink -f "$node_bin")")/.." && pwd)
npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
gyp_js=$npm_dir/node_modules/node-gyp/bin/node-gyp.js
[ -f "$gyp_js" ] || { echo "prebuild-old-glibc: node-gyp not found in $npm_dir" >&2; exit 1; }
[ -d "$node_prefix/include/node" ] || { echo "prebuild-old-glibc: Node headers not found in $node_prefix/include/node" >&2; exit 1; }

mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  rm -rf "$root/work"
}
trap cleanup EXIT
bind() { # bind SOURCE TARGET-INSIDE-ROOT
  if [ -d "$1" ]; then mkdir -p "$root$2"; else mkdir -p "$(dirname "$root$2")"; touch "$root$2"; fi
  mount --bind "$1" "$root$2"
  mounts+=("$root$2")
}
bind "$node_bin" /opt/node/bin/node
bind "$node_prefix/include/node" /opt/node/include/node
bind "$npm_dir" /opt/npm
bind /dev /dev
bind /proc /proc

# A copy of what the build reads, so the host's build/ is left alone.
rm -rf "$root/work" && mkdir -p "$root/work"
cp -a binding.gyp package.json native "$root/work/"
cp -a node_modules "$root/work/"
# prebuildify runs node-gyp through this (npm's own node-gyp, on the bind-mounted npm).
printf '#!/bin/sh\nexec /opt/node/bin/node /opt/npm/node_modules/node-gyp/bin/node-gyp.js "$@"\n' > "$root/opt/node-gyp"
chmod +x "$root/opt/node-gyp"

chroot "$root" /usr/bin/env -i PATH=/opt/node/bin:/usr/bin:/bin HOME=/tmp \
  PREBUILD_NODE_GYP=/opt/node-gyp npm_config_nodedir=/opt/node \
  /bin/sh -c 'cd /work && node node_modules/prebuildify/bin.js --napi --strip'
mkdir -p prebuilds
cp -a "$root/work/prebuilds/." prebuilds/
echo "prebuild-old-glibc: $(ls prebuilds/linux-x64/) built against $(chroot "$root" ldd --version | head -1)"
