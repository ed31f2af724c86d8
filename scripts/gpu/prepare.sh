#!/usr/bin/env bash
# Prepares the GPU check on a machine without a GPU: builds the `cuda`
# binaries (the device test binary and the benchmark), strips and
# compresses them, and downloads the diffusers wheel, into .gpu/ (ignored
# by git; the `run` tool carries it). Then, on the GPU machine:
#   bash scripts/gpu/run.sh            (see its header)
#
# Env: PROFILE=release (default) or dev; CARGO_TARGET_DIR (default
# target-cuda, kept apart from the CPU build); SHARED (default ../shared,
# where CI keeps it). Needs shared/ (the CUDA
# toolchain from PyPI wheels) and network access to PyPI for the wheels.
# A cold release build takes about 20 minutes on 2 cores (most of it
# candle's CUDA kernels).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
profile=${PROFILE:-release}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-cuda}
out=$root/.gpu
diffusers=$(sed -n 's/^diffusers==//p' scripts/golden/requirements.txt)

shared=${SHARED:-../shared}
env_sh=$(bash "$shared/scripts/cuda-build-env.sh") || { echo "no CUDA toolchain: $shared/scripts/cuda-build-env.sh failed (set SHARED)" >&2; exit 1; }
eval "$env_sh"
flags=(--features cuda)
[ "$profile" = release ] && flags+=(--release)
dir=$([ "$profile" = release ] && echo release || echo debug)

cargo build "${flags[@]}" --example bench_gpu
test_bin=$(cargo test "${flags[@]}" --test device --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "device" and m.get("executable"):
        print(m["executable"])')

rm -rf "$out" && mkdir -p "$out/wheels"
for pair in "bench_gpu:$CARGO_TARGET_DIR/$dir/examples/bench_gpu" "device-test:$test_bin"; do
  name=${pair%%:*} bin=${pair#*:}
  cp "$bin" "$out/$name"
  strip "$out/$name"
  xz -T0 -6 "$out/$name"
done
# The test binary finds tests/data under the checkout it was built in.
echo "$root" >"$out/manifest_dir"

# diffusers only: the GPU machine's image has torch, transformers,
# safetensors, sentencepiece and the rest (.library/device/KINDS.md).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d "$out/wheels" \
  "diffusers==$diffusers" importlib_metadata
ls -la "$out" "$out/wheels"
du -sh "$out"
