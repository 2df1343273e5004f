#!/usr/bin/env bash
# The CartPole-v1 lottery-ticket study (Yu et al. 2020, classic control): IMP with resetting to θ0,
# 20% of the hidden weights (10% of the output layer's) pruned per level, beside the reinit and
# random_prune controls, 2 replicates. Resumable: rerun to continue; a finished run trains nothing.
#   benchmarks/results/cartpole/run.sh [OUT]      (default OUT: /work/runs)
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${1:-/work/runs}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
# Levels 0-8 (hidden layers down to 0.8^8 = 16.8%): 50 runs.
python -m tf_lottery.main --flagfile=flags/cartpole.cfg --levels=8 --replicates=2 --output_dir="$OUT"
# The same experiment extended to levels 9-12 (0.8^12 = 6.9%): 24 more runs, the first 50 are read, not retrained.
python -m tf_lottery.main --flagfile=flags/cartpole.cfg --levels=12 --replicates=2 --output_dir="$OUT"
python benchmarks/results/cartpole/summarize.py --results="$OUT/cartpole/results.csv"
cp "$OUT/cartpole/results.csv" benchmarks/results/cartpole/results.csv
