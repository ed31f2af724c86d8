#!/usr/bin/env bash
# The GPU check in one command on the GPU machine (an H100/H200 with PyTorch
# and no Rust): run from the repository root with .gpu/ (made by
# scripts/gpu/prepare.sh) beside it, e.g. through the `run` tool:
#   run(command="bash scripts/gpu/run.sh", carry=[".gpu"], timeout_s=600)
# A task gets one such run (15 device-minutes, the machine's cold start
# included), so the stages go most important first and each is cut to what
# is left of BUDGET_S (default 560 s, inside one 10-minute call):
#   (setup)          `ldd` of both binaries (a binary with a missing
#                    library skips only the stages that run it)
#   weights          random CogVideoX-5B weights in the diffusers layout
#                    (~21 GB, in /dev/shm when it has room), in the background
#   env              GPU, cuDNN, library versions
#   tests_attention  the bf16 attention device test, with cuDNN's own log of
#                    why it refuses a shape (CUDNN_LOGLEVEL_DBG=2)
#   tests            the other device tests on CUDA (tiny checkpoints)
#   wait_weights     until the weights are written
#   parity_diffusers one full-size transformer forward, diffusers bf16
#   parity_rust      the same forward, libcogvideo bf16
#   parity_compare   their difference, computed here (summary.py parity)
#   bench_rust       libcogvideo: 4 text-to-video steps with CFG, the VAE
#                    decode of 49 frames, 3 inversion and 3 edit steps
#   bench_diffusers  the same in diffusers
# and only with time left, each needing its whole cap:
#   calibrate        torch's attention and GEMM speeds at the 5B shapes
#   parity_f32       diffusers' f32 forward, for its own bf16-vs-f32 spread
#   tests_chunked    the attention and pipeline tests with
#                    COGVIDEO_ATTENTION=chunked
# then always summary.py: the table. $OUT (the run tool's folder, else
# /tmp/cogvideo-gpu) gets run.log (everything printed) and summary.md only;
# everything else stays in $WORK (default /tmp/cogvideo-work), with
# stages.txt saying how each stage ended.
#
# DRY_RUN=1 runs the plan without a GPU, Python or binaries: each stage
# takes DRY_TIMES' seconds for it ("tests=30,parity_rust=200"; default
# its whole cap) on a simulated clock, DRY_MISSING names binaries whose
# libraries are missing (scripts/gpu/test_scripts.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
gpu=$root/.gpu
res=${OUT:-/tmp/cogvideo-gpu}
work=${WORK:-/tmp/cogvideo-work}
budget=${BUDGET_S:-560}
dry=${DRY_RUN:-0}
# Seconds kept back for the summary.
reserve=20
mkdir -p "$res" "$work"
: >"$work/stages.txt"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$res/run.log") 2>&1

# dry_time NAME DEFAULT: a dry run's seconds for NAME.
dry_time() {
  if [[ ",${DRY_TIMES:-}," =~ ,$1=([0-9]+), ]]; then echo "${BASH_REMATCH[1]}"; else echo "$2"; fi
}
clock=0
elapsed() { if [ "$dry" = 1 ]; then echo "$clock"; else echo "$SECONDS"; fi; }
log() { echo "== +$(elapsed)s $*"; }
record() { echo "stage=$1 status=$2 rc=$3 seconds=$4 cap=$5${6:+ note=$6}" >>"$work/stages.txt"; }
# Binaries or inputs later stages cannot use ("bench_gpu device-test weights").
broken=" "

# stage NAME CAP KIND NEEDS: runs the function st_NAME under a timeout of
# CAP cut to what is left of the budget. KIND "main" runs with at least 10 s
# left, "extra" only when the whole cap is left. NEEDS: what it uses
# ("-" for nothing), skipped when any is broken.
stage() {
  local name=$1 cap=$2 kind=$3 needs=$4 n
  for n in ${needs//,/ }; do
    if [[ $broken == *" $n "* ]]; then
      log "$name: skipped, $n unusable"
      record "$name" skipped - 0 "$cap" "$n unusable"
      return 1
    fi
  done
  local left=$((budget - reserve - $(elapsed)))
  if ((left < 10)) || { [ "$kind" = extra ] && ((left < cap)); }; then
    log "$name: skipped, ${left}s of the budget left"
    record "$name" skipped - 0 "$cap" "budget"
    return 1
  fi
  local t=$((cap < left ? cap : left)) start rc
  start=$(elapsed)
  log "$name (at most ${t}s)"
  if [ "$dry" = 1 ]; then
    local d
    d=$(dry_time "$name" "$cap")
    if ((d > t)); then rc=124 d=$t; else rc=0; fi
    clock=$((clock + d))
  else
    timeout -k 5 "$t" bash -o pipefail -c "st_$name"
    rc=$?
  fi
  local status=ok
  ((rc == 124 || rc == 137)) && status=timeout
  ((rc != 0 && rc != 124 && rc != 137)) && status=failed
  record "$name" "$status" "$rc" $(($(elapsed) - start)) "$t"
  [ "$status" = ok ] || log "$name: $status (exit $rc)"
  return "$rc"
}

# The stages, run by `stage` in a child bash (hence exported).
st_env() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cuDNN for libcogvideo: ${cudnn_so:-not found}"
  echo "weights in $ckpt"
  df -h "$(dirname "$ckpt")" | tail -1
  python3 -c 'import diffusers, transformers, torch; print("diffusers", diffusers.__version__, "transformers", transformers.__version__, "torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
}
st_weights() {
  [ -f "$ckpt/model_index.json" ] || python3 scripts/gpu/make_weights.py "$ckpt" 2>&1 | grep -v '%|'
}
device_test() { COGVIDEO_TEST_DEVICE=cuda "$work/device-test" --test-threads 1 --nocapture "$@"; }
st_tests_attention() {
  # cuDNN's log of why a shape has no engine (warnings and errors only).
  CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG=stderr COGVIDEO_TEST_EXPECT_CUDNN=$expect_cudnn \
    device_test bf16_attention
}
st_tests() { COGVIDEO_TEST_EXPECT_CUDNN=$expect_cudnn device_test --skip bf16_attention; }
st_wait_weights() {
  until [ -e "$work/weights.rc" ]; do sleep 1; done
  cat "$work/weights.log" 2>/dev/null
  return "$(cat "$work/weights.rc")"
}
st_parity_diffusers() {
  python3 scripts/gpu/bench_diffusers.py parity "$ckpt" "$work" bf16 2>&1 | grep -v '%|' |
    tee "$work/diffusers_parity.txt"
}
st_parity_rust() {
  [ -f "$work/inputs.safetensors" ] || { echo "no inputs.safetensors: diffusers' parity did not run"; return 3; }
  "$work/bench_gpu" parity "$ckpt" "$work/inputs.safetensors" "$work/rust.safetensors" 2>&1 |
    tee "$work/rust_parity.txt"
}
st_parity_compare() { python3 scripts/gpu/summary.py parity "$work"; }
# GPU memory every 200 ms into smi_NAME.csv; $smi_pid is nvidia-smi itself.
smi() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$work/smi_$1.csv" &
  smi_pid=$!
}
st_bench_rust() {
  smi rust
  "$work/bench_gpu" time "$ckpt" t2v_steps=4 edit_steps=3 max_step_s=30 2>&1 | tee "$work/rust_time.txt"
  local rc=$?
  kill "$smi_pid"
  return $rc
}
st_bench_diffusers() {
  smi diffusers
  python3 scripts/gpu/bench_diffusers.py time "$ckpt" t2v_steps=4 edit_steps=3 2>&1 |
    grep -v '%|' | tee "$work/diffusers_time.txt"
  local rc=$?
  kill "$smi_pid"
  return $rc
}
st_calibrate() { python3 scripts/gpu/calibrate.py | tee "$work/calibrate.txt"; }
st_parity_f32() {
  python3 scripts/gpu/bench_diffusers.py parity "$ckpt" "$work" f32 2>&1 | grep -v '%|' &&
    python3 scripts/gpu/summary.py parity "$work"
}
st_tests_chunked() { COGVIDEO_ATTENTION=chunked device_test attention pipelines; }
export -f device_test smi st_env st_weights st_tests_attention st_tests st_wait_weights \
  st_parity_diffusers st_parity_rust st_parity_compare st_bench_rust st_bench_diffusers \
  st_calibrate st_parity_f32 st_tests_chunked

# Where the weights go: RAM-backed /dev/shm when it has room for them.
shm_free=$(df --output=avail -B1G /dev/shm 2>/dev/null | tail -1 | tr -d ' ')
if [ "$dry" != 1 ] && [ "${shm_free:-0}" -ge 30 ]; then ckpt=/dev/shm/cogvideo-ckpt; else ckpt=$work/ckpt; fi
export root work ckpt

log "setup"
if [ "$dry" = 1 ]; then
  clock=$(dry_time setup 20)
  for b in ${DRY_MISSING:-}; do broken+="$b "; done
else
  # torch's CUDA and cuDNN libraries serve libcogvideo too.
  site=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  cudnn_so=$(find "$site/nvidia" -name 'libcudnn.so.9' 2>/dev/null | head -1)
  export cudnn_so
  export LD_LIBRARY_PATH=$site/nvidia/cu13/lib${cudnn_so:+:$(dirname "$cudnn_so")}:${LD_LIBRARY_PATH:-}
  for b in bench_gpu device-test; do
    [ -x "$work/$b" ] || { xz -dc "$gpu/$b.xz" >"$work/$b" && chmod +x "$work/$b"; }
    if ! [ -x "$work/$b" ] || ldd "$work/$b" | grep 'not found'; then
      echo "$b: missing libraries, its stages are skipped"
      broken+="$b "
    fi
  done
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$gpu"/wheels/*.whl 2>&1 | tail -2
  export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
  # The test binary reads tests/data under the checkout it was built in.
  manifest=$(cat "$gpu/manifest_dir")
  if [ ! -e "$manifest/tests/data" ]; then mkdir -p "$(dirname "$manifest")" && ln -sfn "$root" "$manifest"; fi
  expect_cudnn=$(python3 -c 'import torch; print(int((torch.backends.cudnn.version() or 0) >= 91301))')
  export expect_cudnn
fi

# The weights are written while the tests run; wait_weights waits for them.
rm -f "$work/weights.rc"
if [ "$dry" = 1 ]; then
  record weights background - 0 300
elif [ -f "$ckpt/model_index.json" ]; then
  echo 0 >"$work/weights.rc"
else
  log "weights, in the background (at most 300s)"
  { timeout -k 5 300 bash -o pipefail -c st_weights >"$work/weights.log" 2>&1; echo $? >"$work/weights.rc"; } &
fi
stage env 20 main -
stage tests_attention 40 main device-test
stage tests 60 main device-test
stage wait_weights 80 main - || broken+="weights "
stage parity_diffusers 50 main weights
stage parity_rust 50 main bench_gpu,weights
stage parity_compare 15 main -
stage bench_rust 100 main bench_gpu,weights
stage bench_diffusers 100 main weights
stage calibrate 60 extra -
stage parity_f32 80 extra weights
stage tests_chunked 60 extra device-test
log "summary"
timeout "$reserve" python3 scripts/gpu/summary.py table "$work" | tee "$res/summary.md"
log done
