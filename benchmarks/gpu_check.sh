#!/usr/bin/env bash
# The prepared GPU run: engine correctness against CPU, SRCA kernels, and the fps benchmarks
# (stages, batch sweeps at 224 and 448, end to end) on CUDA with fp16 and CUDA graphs; first the
# CUDA-only tests (tests/test_gpu.py: compiled Triton/Flex kernels, GPU preprocessing).
#
#   benchmarks/gpu_check.sh OUTDIR          # one call, < 8 min on an H100/H200, no network
#   GPU_CHECK_ALLOW_CPU=1 benchmarks/gpu_check.sh /tmp/gc   # same steps on CPU at tiny sizes
#
# Every step runs under `timeout` inside one overall budget (GPU_CHECK_BUDGET seconds, default
# 420), so a hang costs its own step only; a failed step is recorded and the next one runs.
# Missing packages (PyAV, ONNX Runtime, torch-tensorrt) are skipped with a note by the steps
# themselves. Results: OUTDIR/*.json, OUTDIR/*.md (printed tables), OUTDIR/steps.tsv, OUTDIR/log.txt.
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
BUDGET=${GPU_CHECK_BUDGET:-420}
CPU_MODE=${GPU_CHECK_ALLOW_CPU:-0}
exec > >(tee -a "$OUT/log.txt") 2>&1
printf 'step\trc\tseconds\n' > "$OUT/steps.tsv"

# PyAV is not installed on the GPU host; a wheel carried in .whl/ is installed offline.
if ! "$PY" -c "import av" 2>/dev/null; then
  whl=$(ls .whl/av-*.whl 2>/dev/null | head -1)
  if [[ -n "$whl" ]]; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$whl" && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  "$PY" -c "import av" 2>/dev/null || echo "NOTE: PyAV missing: decode uses OpenCV only and the end-to-end runs are skipped"
fi

# step NAME CAP_SECONDS CMD...: run under timeout, capped by what is left of the budget.
step() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS))
  local t=$((cap < left ? cap : left))
  if ((t < 15)); then
    echo "=== $name: SKIPPED (budget spent)"; printf '%s\tskipped\t0\n' "$name" >> "$OUT/steps.tsv"; return
  fi
  echo "=== $name (timeout ${t}s): $*"
  local t0=$SECONDS
  timeout -k 10 "$t" "$@"
  local rc=$?
  ((rc == 124 || rc == 137)) && echo "=== $name: TIMED OUT after ${t}s"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/steps.tsv"
}

if [[ "$CPU_MODE" == 1 ]]; then
  # Dry run of every step on CPU: tiny inputs, same code paths and options.
  DEV=cpu; SIZE_S=64; SIZE_L=96; BIG=resnet18; SEC=0.1; BATCHES=1,2; E2E_SEC=0.5; STREAMS=2
  FLAGS=(--resolutions 720p --clip-frames 20 --replay-frames 20 --paced-fps 30,60)
  SELF=(--size 64 --iters 3 --no-compile); KERN=(--device cpu --quick --budget-s 20)
  STAGES=(--engines torch-fp32,onnxruntime-fp32); COMPILE=compile-fp32
else
  DEV=cuda; SIZE_S=224; SIZE_L=448; BIG=resnet50; SEC=0.3; BATCHES=1,2,4,8,16,32,64; E2E_SEC=3; STREAMS=64
  FLAGS=(--resolutions 720p,1080p --clip-frames 150 --replay-frames 300 --paced-fps 30,60)
  SELF=(--size 224 --batches 1,8 --iters 30); KERN=(--device cuda --budget-s 40)
  STAGES=(--engines torch-fp32,torch-fp16,torch-fp16-cudagraphs,tensorrt-fp16,onnxruntime-cuda-fp32)
  COMPILE=compile-fp16
fi
FPS=("$PY" -m benchmarks.fps --device "$DEV" --seconds "$SEC" --e2e-seconds "$E2E_SEC")
# The compact student: the bundled default, or a random-init stand-in of a compact backbone.
MODEL=()
[[ -f stream/assets/student.json ]] || MODEL=(--backbone mobilenetv3_large_100)
[[ "$DEV" == cpu ]] && MODEL=(--backbone mobilenetv3_small_100)

# Most important first: when the budget runs out, the last steps are the ones skipped.
step nvidia-smi 30 bash -c "nvidia-smi > '$OUT/nvidia-smi.txt' 2>&1; cat '$OUT/nvidia-smi.txt'"
step environment 30 "$PY" -c "import json; from benchmarks.env import environment; \
json.dump(environment('$DEV'), open('$OUT/environment.json', 'w'), indent=1); print(open('$OUT/environment.json').read())"
step gpu-tests 120 "$PY" -m pytest tests/test_gpu.py -q -p no:cacheprovider --timeout 100
step engines 90 "$PY" -m benchmarks.gpu_selfcheck --json "$OUT/engines.json" "${SELF[@]}"
step kernels 60 "$PY" -m benchmarks.kernels --json "$OUT/kernels.json" "${KERN[@]}"
# ResNet-50 student (random init: speed does not depend on the weights) at the paper's 448.
step fps-$BIG-$SIZE_L 70 "${FPS[@]}" --backbone "$BIG" --input-size "$SIZE_L" --sections inference \
  --batches "$BATCHES" "${STAGES[@]}" --json "$OUT/fps-$BIG-$SIZE_L.json" --markdown "$OUT/fps-$BIG-$SIZE_L.md"
# End to end on 1080p: live 60 fps latency and concurrent 30 fps streams, fp16 + CUDA graphs.
step e2e-$BIG-$SIZE_L 110 "${FPS[@]}" --backbone "$BIG" --input-size "$SIZE_L" --sections e2e "${FLAGS[@]}" \
  --e2e-clips 1080p-h264 --max-streams "$STREAMS" --json "$OUT/e2e-$BIG-$SIZE_L.json" --markdown "$OUT/e2e-$BIG-$SIZE_L.md"
step fps-$BIG-$SIZE_S 50 "${FPS[@]}" --backbone "$BIG" --input-size "$SIZE_S" --sections inference \
  --batches "$BATCHES" "${STAGES[@]}" --json "$OUT/fps-$BIG-$SIZE_S.json" --markdown "$OUT/fps-$BIG-$SIZE_S.md"
step fps-compact-stages 80 "${FPS[@]}" "${MODEL[@]}" --input-size "$SIZE_S" "${FLAGS[@]}" \
  --sections decode,preprocess,inference,smoothing --decode-frames 60 --batches "$BATCHES" "${STAGES[@]}" \
  --json "$OUT/fps-compact-stages.json" --markdown "$OUT/fps-compact-stages.md"
step e2e-compact 70 "${FPS[@]}" "${MODEL[@]}" --input-size "$SIZE_S" --sections e2e "${FLAGS[@]}" \
  --e2e-clips 1080p-h264 --max-streams "$STREAMS" --json "$OUT/e2e-compact.json" --markdown "$OUT/e2e-compact.md"
# torch.compile last: building takes tens of seconds per batch size.
step compile-$BIG-$SIZE_L 60 "${FPS[@]}" --backbone "$BIG" --input-size "$SIZE_L" --sections inference \
  --engines "$COMPILE" --batches 1,8 --compile-batches 1,8 \
  --json "$OUT/compile-$BIG-$SIZE_L.json" --markdown "$OUT/compile-$BIG-$SIZE_L.md"

echo "=== done in ${SECONDS}s; steps:"; cat "$OUT/steps.tsv"
