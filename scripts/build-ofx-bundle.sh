#!/usr/bin/env bash
# Builds the OpenFX bundle:
#   OUT/CogVideoX.ofx.bundle/Contents/Linux-x86-64/{CogVideoX.ofx,libcogvideo.so}
# The plugin finds libcogvideo.so beside itself through its $ORIGIN run path.
#
# usage: scripts/build-ofx-bundle.sh [--debug] [OUT]   (OUT defaults to target/ofx)
# Extra cargo flags (e.g. --features cuda for the library) go in CARGO_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [ "${1:-}" = "--debug" ]; then
  profile=debug
  shift
fi
target_dir=${CARGO_TARGET_DIR:-target}
out=${1:-$target_dir/ofx}

flags=()
[ "$profile" = release ] && flags+=(--release)
# shellcheck disable=SC2086
cargo build "${flags[@]}" -p cogvideo --lib ${CARGO_FLAGS:-}
cargo build "${flags[@]}" -p cogvideox-ofx --lib

bin=$out/CogVideoX.ofx.bundle/Contents/Linux-x86-64
rm -rf "$out/CogVideoX.ofx.bundle"
mkdir -p "$bin"
cp "$target_dir/$profile/libcogvideox_ofx.so" "$bin/CogVideoX.ofx"
cp "$target_dir/$profile/libcogvideo.so" "$bin/libcogvideo.so"
echo "$out/CogVideoX.ofx.bundle"
