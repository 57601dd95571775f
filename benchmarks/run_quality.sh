#!/usr/bin/env bash
# Regenerate benchmarks/RESULTS.md: every protocol of src/allinone/evaluate/ on the full sets,
# the shipped model and the classical baselines, measured in one run.
#
# Needs the data folder (--data DIR, else $ALLINONE_DATA, else ../shared/data) and, for the
# CBM3D/BM3D baselines, `pip install -e ".[eval]"` (without it NL-means stands in, labelled so).
# Extra arguments go to `allinone eval`, e.g.
#   benchmarks/run_quality.sh --limit 3 --tasks denoise,fmd
#   PYTHON=.venv/bin/python benchmarks/run_quality.sh --model tiny --limit 3
# On a busy CPU, OMP_NUM_THREADS=1 can be several times faster than the default thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m allinone.cli eval --model default --output benchmarks/RESULTS.md "$@"
