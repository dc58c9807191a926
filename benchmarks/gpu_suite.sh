#!/usr/bin/env bash
# The GPU suite on a lent device (see benchmarks/gpu_suite.py for the rows and how to call it):
# prints nvidia-smi (if present) and JAX's version and devices, then runs the suite with
# --sizes full (SIZES=tiny for a CPU try) under an 8-minute timeout, on the CIFAR-10 training
# zip in data/ if it is there. With $OUT set, the table goes to $OUT/gpu_suite.md and the
# whole output to $OUT/gpu_suite.log.
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
log=/dev/null
args=(--sizes "${SIZES:-full}" --data data/cifar10-train.zip)
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  log="$OUT/gpu_suite.log"
  args+=(--out "$OUT/gpu_suite.md")
fi
{
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
  "$python" -c 'import jax; print("jax", jax.__version__, jax.devices())'
  timeout --kill-after=20s 8m "$python" benchmarks/gpu_suite.py "${args[@]}"
  status=$?
  if ((status == 124)); then echo "gpu_suite.py: stopped at the 8-minute timeout"; fi
  exit "$status"
} 2>&1 | tee "$log"
