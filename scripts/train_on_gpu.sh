#!/usr/bin/env bash
# Continue the run behind the shipped weights (checkpoints/small) on one CUDA GPU for SECONDS,
# with configs/small-gpu-continue.json and --fit-steps: a warm restart whose learning rate ends
# its schedule as the time runs out. From the repository root, with the training data staged by
# scripts/stage_training_data.py (or ALLINONE_DATA pointing at it):
#
#   bash scripts/train_on_gpu.sh SECONDS [OUT]
#
# It trains a copy of the run in runs/gpu-run and leaves the repository as it was. OUT ($OUT,
# else runs/gpu) receives the exported model (default.safetensors + default.json), the run's
# checkpoint (checkpoint/) and its log (log.jsonl): eight files at most, none over 16 MiB.
# Needs torch, numpy, scikit-image, tifffile, imageio and safetensors; the package itself is
# read from src/. PYTHON (default python3) and DEVICE (default cuda) can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: bash scripts/train_on_gpu.sh SECONDS [OUT]}
out=${2:-${OUT:-runs/gpu}}
python=${PYTHON:-python3}
run=runs/gpu-run
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export ALLINONE_DATA=${ALLINONE_DATA:-.data}

"$python" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available())"
rm -rf "$run"
mkdir -p "$run" "$out/checkpoint"
cp -r checkpoints/small/. "$run/"

"$python" -m allinone.cli train --config configs/small-gpu-continue.json --out "$run" \
  --device "${DEVICE:-cuda}" --seconds "$seconds" --fit-steps --export "$out/default" \
  --description "Shipped default: small preset (1.7 M parameters incl. the training-only \
degradation net), bidirectional training on synthesised single and mixed degradations, \
microscopy fields and real FMD pairs of fields 7-20: 48,000 CPU steps (configs/small.json), \
3,519 CPU steps on 128-px patches (configs/small-continue.json), 4,000 CPU steps adding \
procedural fluorescence microscopy and FMD field 19's raw frames (configs/small-fluorescence.json), \
then GPU warm restarts with the same data (configs/small-gpu-continue.json); see docs/TRAINING.md"

cp "$run"/checkpoint/* "$out/checkpoint/"
cp "$run/log.jsonl" "$out/"
ls -l "$out" "$out/checkpoint"
