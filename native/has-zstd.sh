#!/bin/sh
# Prints 1 when the system libzstd can be compiled and linked against (Debian/Ubuntu:
# libzstd-dev; RHEL/Fedora: libzstd-devel), else 0. binding.gyp builds the addon without zstd
# then: compressed images are refused with a clear error and everything else works.
# IOHELPER_ZSTD=0 forces a build without it (tests of that build use it).
if [ "${IOHELPER_ZSTD:-}" = 0 ]; then echo 0; exit 0; fi
dir=$(mktemp -d) || { echo 0; exit 0; }
trap 'rm -rf "$dir"' EXIT
printf '#include <zstd.h>\nint main(void){return ZSTD_versionNumber() < 10400;}\n' > "$dir/t.c"
if ${CC:-cc} "$dir/t.c" -o "$dir/t" -lzstd >/dev/null 2>&1; then echo 1; else echo 0; fi
