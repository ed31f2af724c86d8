#!/usr/bin/env bash
# The GPU check in one command on the GPU machine (an H200 with PyTorch and
# no Rust): run from the repository root with .gpu/ (made by
# scripts/gpu/prepare.sh) beside it, e.g. through the `run` tool:
#   run(command="bash scripts/gpu/run.sh", carry=[".gpu"], timeout_s=600)
# Stages, in order (a comma-separated list as $1 runs some of them):
#   env        libraries from torch's wheels, ldd check, the diffusers wheel
#   calibrate  torch's attention and GEMM speeds at the 5B shapes
#   tests      the device tests on CUDA (tiny checkpoints; tolerances in
#              tests/device.rs), then the attention and pipeline tests again
#              with COGVIDEO_ATTENTION=chunked
#   weights    random CogVideoX-5B weights in the diffusers layout (~21 GB)
#   parity     one full-size transformer forward: diffusers bf16 and f32,
#              libcogvideo bf16
#   bench      diffusers, then libcogvideo: 4 text-to-video steps with CFG
#              (the 50-step figure is extrapolated), VAE decode of 49
#              frames, 3 edit steps; peak GPU memory by nvidia-smi; the table
# Results (logs, table, small tensors) go to $OUT (the run tool's folder) or
# /tmp/cogvideo-gpu. The whole run stops starting stages after BUDGET_S
# seconds (default 540) so that it ends inside one 10-minute call.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
gpu=$root/.gpu
res=${OUT:-/tmp/cogvideo-gpu}
work=${WORK:-/tmp/cogvideo-work}
stages=${1:-env,calibrate,tests,weights,parity,bench}
budget=${BUDGET_S:-540}
mkdir -p "$res" "$work"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$res/run.log") 2>&1

has() { [[ ",$stages," == *",$1,"* ]]; }
log() { echo "== +${SECONDS}s $*"; }
# A stage's time limit: its own, cut to what is left of the budget.
limit() {
  local left=$((budget - SECONDS))
  ((left < 10)) && { log "budget spent, skipping"; return 1; }
  echo $(($1 < left ? $1 : left))
}

# Always: the libraries and binaries (cheap), so later stages can run alone.
site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
cudnn_so=$(find "$site/nvidia" -name 'libcudnn.so.9' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$site/nvidia/cu13/lib${cudnn_so:+:$(dirname "$cudnn_so")}:${LD_LIBRARY_PATH:-}
for b in bench_gpu device-test; do
  [ -x "$work/$b" ] || xz -dc "$gpu/$b.xz" >"$work/$b" && chmod +x "$work/$b"
done
python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$gpu"/wheels/*.whl 2>&1 | tail -2
export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
# The test binary reads tests/data under the checkout it was built in.
manifest=$(cat "$gpu/manifest_dir")
if [ ! -e "$manifest/tests/data" ]; then mkdir -p "$(dirname "$manifest")" && ln -sfn "$root" "$manifest"; fi

if has env; then
  log env
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cuDNN for libcogvideo: ${cudnn_so:-not found}"
  for b in bench_gpu device-test; do
    if ldd "$work/$b" | grep 'not found'; then echo "$b: missing libraries"; exit 1; fi
  done
  python3 -c 'import diffusers, transformers, torch; print("diffusers", diffusers.__version__, "transformers", transformers.__version__, "torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
fi

if has calibrate && t=$(limit 90); then
  log calibrate
  timeout "$t" python3 scripts/gpu/calibrate.py | tee "$res/calibrate.txt"
fi

if has tests && t=$(limit 150); then
  log "tests on CUDA"
  expect=$(python3 -c 'import torch; print(int((torch.backends.cudnn.version() or 0) >= 91301))')
  COGVIDEO_TEST_DEVICE=cuda COGVIDEO_TEST_EXPECT_CUDNN=$expect timeout "$t" \
    "$work/device-test" --test-threads 1 --nocapture 2>&1 | tee "$res/tests_cuda.txt"
  if t=$(limit 90); then
    log "tests on CUDA, chunked attention"
    COGVIDEO_ATTENTION=chunked COGVIDEO_TEST_DEVICE=cuda timeout "$t" \
      "$work/device-test" --test-threads 1 --nocapture attention pipelines 2>&1 | tee "$res/tests_cuda_chunked.txt"
  fi
fi

ckpt=$work/ckpt
if has weights && t=$(limit 180); then
  log weights
  [ -f "$ckpt/model_index.json" ] || timeout "$t" python3 scripts/gpu/make_weights.py "$ckpt" 2>&1 | grep -v '%|'
fi

if has parity && t=$(limit 90); then
  log "parity: diffusers"
  timeout "$t" python3 scripts/gpu/bench_diffusers.py parity "$ckpt" "$work" 2>&1 | grep -v '%|'
  cp "$work/diffusers.safetensors" "$res/" 2>/dev/null
  if t=$(limit 60); then
    log "parity: libcogvideo"
    timeout "$t" "$work/bench_gpu" parity "$ckpt" "$work/inputs.safetensors" "$res/rust.safetensors"
  fi
fi

smi() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$res/smi_$1.csv" &
  smi_pid=$!
}
if has bench && t=$(limit 150); then
  log "bench: diffusers"
  smi diffusers
  timeout "$t" python3 scripts/gpu/bench_diffusers.py time "$ckpt" t2v_steps=4 edit_steps=3 2>&1 |
    grep -v '%|' | tee "$res/diffusers_time.txt"
  kill "$smi_pid" 2>/dev/null
  if t=$(limit 150); then
    log "bench: libcogvideo"
    smi rust
    timeout "$t" "$work/bench_gpu" time "$ckpt" t2v_steps=4 edit_steps=3 max_step_s=30 2>&1 |
      tee "$res/rust_time.txt"
    kill "$smi_pid" 2>/dev/null
  fi
  python3 scripts/gpu/summary.py "$res" | tee "$res/summary.md"
fi
log done
