#!/usr/bin/env bash
# Issue 13's GPU measurements in one device call (docs/development.md, "The GPU check for the record"):
#  1. the record recipe: three seeds of Ciresan's 784-2500-2000-1500-1000-500-10 with record-cpu's deformations
#     and schedule, side by side, for as many epochs as fit BUDGET seconds after a 3-epoch calibration;
#  2. the cold first epoch (item 7): bench --cold, ours beside Keras-JAX fit and PyTorch, in the time left.
# Writes to $OUT: log.txt (both commands' output), record.tgz (the run folders without models or checkpoints:
# group.json, each seed's metrics.json, history and config) and bench.json.
# Tested on the CPU: PATH=.venv/bin:$PATH OUT=/tmp/out H='[64]' BUDGET=6 GPU= bash docs/gpu-record.sh
: "${OUT:?the device tool sets OUT}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
W=$(mktemp -d) && trap 'rm -rf "$W"' EXIT && export MNIST_MLP_CACHE=$W/cache || exit
if ! python3 -c "import keras" 2>/dev/null; then  # the device machine: Keras' wheels were carried in .whl/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" .whl/*.whl || exit
  export PYTHONPATH=$W/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}src
set -f  # from here $R's brackets ([2500,...]) are words, not file patterns
M="python3 -m mnist_mlp"; H=${H:-[2500,2000,1500,1000,500]}; BUDGET=${BUDGET:-225}; GPU=${GPU---gpu}
R="--config record-cpu --set model.hidden_units=$H --set train.checkpoint_seconds=60 --seeds 3 --side-by-side"
LOG=$OUT/log.txt
{ date -u; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } >"$LOG"
$M data import .mnist >>"$LOG" 2>&1 || exit
$M train $R --epochs 3 --out "$W/cal" >>"$LOG" 2>&1 || exit
E=$(python3 -c "import json; s = json.load(open('$W/cal/seed-20160717/metrics.json'))['epoch_seconds'][1:]
print(max(1, int($BUDGET / max(s))))") || exit
echo "epochs: $E (calibration done at ${SECONDS} s)" >>"$LOG"
# The call's limit is 570 s: the record ends by 500 s whenever the calibration ended (-k: KILL 15 s after TERM,
# for a process inside one long XLA call), so the tar below always runs; the bench gets what is left.
timeout -k 15 $((500 - SECONDS)) $M train $R --epochs "$E" --out "$W/rec" >>"$LOG" 2>&1
echo "train rc=$? at ${SECONDS} s" >>"$LOG"
tar czf "$OUT/record.tgz" --exclude='*.keras' --exclude='*.npz' -C "$W" rec
LEFT=$((540 - SECONDS))
if [ $LEFT -gt 60 ]; then
  timeout -k 10 $LEFT $M bench $GPU --cold --epochs 3 --variants ours,keras-jax,torch --json "$OUT/bench.json" >>"$LOG" 2>&1
  echo "bench rc=$? at ${SECONDS} s" >>"$LOG"
else
  echo "no time left for the bench (${SECONDS} s)" >>"$LOG"
fi
tail -25 "$LOG"
