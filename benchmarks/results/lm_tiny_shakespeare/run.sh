#!/usr/bin/env bash
# Every command of the language-model study (resumable: rerun to continue; a finished run trains
# nothing). `run.sh lstm`, `run.sh lstm_rewind` or `run.sh transformer` runs one part; they can run
# side by side. lstm_rewind is the LSTM flagfile with the Transformer's late rewinding (iteration 150),
# transformer_reset the Transformer's flagfile resetting to θ0 instead.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs}
lstm() { python -m tf_lottery.main --flagfile=flags/lstm_tiny_shakespeare.cfg --replicates=2 --output_dir="$OUT" --noprogress; }
lstm_rewind() { python -m tf_lottery.main --flagfile=flags/lstm_tiny_shakespeare.cfg --rewind_iteration=150 \
  --experiment_name=lstm_tiny_shakespeare_rewind150 --replicates=2 --output_dir="$OUT" --noprogress; }
transformer() { python -m tf_lottery.main --flagfile=flags/transformer_tiny_shakespeare.cfg --replicates=2 --output_dir="$OUT" --noprogress; }
transformer_reset() { python -m tf_lottery.main --flagfile=flags/transformer_tiny_shakespeare.cfg --rewind_iteration=0 \
  --experiment_name=transformer_tiny_shakespeare_reset --replicates=2 --output_dir="$OUT" --noprogress; }
case "${1:-all}" in
  lstm) lstm ;;
  lstm_rewind) lstm_rewind ;;
  transformer) transformer ;;
  transformer_reset) transformer_reset ;;
  all) lstm; lstm_rewind; transformer; transformer_reset ;;
  *) echo "usage: $0 [lstm|lstm_rewind|transformer|transformer_reset]" >&2; exit 2 ;;
esac
