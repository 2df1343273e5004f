#!/usr/bin/env bash
# Every command of the structured-tickets study (resumable: rerun to continue; a finished run
# trains nothing). `run.sh lenet` or `run.sh conv` runs one half (they can run side by side).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs}
lenet() {
  local main="python -m tf_lottery.main --flagfile=flags/lenet300_mnist_neurons.cfg --output_dir=$OUT --noprogress"
  $main                                                    # neurons, reset to θ0, both controls
  $main --rewind_iteration=250 --controls= --experiment_name=lenet300_mnist_neurons_rewind
  # the unstructured ticket over the same range of weight densities (0.7^L, the output layer at 0.85^L)
  $main --pruning_structure=unstructured --output_prune_rate=0.15 --controls= --experiment_name=lenet300_mnist_unstructured
}
conv() {
  local main="python -m tf_lottery.main --flagfile=flags/lenet5_fashion_mnist_channels.cfg --output_dir=$OUT --noprogress"
  $main                                                    # channels, reset to θ0, both controls
  # the unstructured ticket over the same range of weight densities (0.7^L, the output layer at 0.85^L)
  $main --pruning_structure=unstructured --prune_rate=0.3 --output_prune_rate=0.15 --controls= \
    --experiment_name=lenet5_fashion_mnist_unstructured
}
case "${1:-all}" in
  lenet) lenet ;;
  conv) conv ;;
  all) lenet; conv ;;
  *) echo "usage: $0 [lenet|conv]" >&2; exit 2 ;;
esac
