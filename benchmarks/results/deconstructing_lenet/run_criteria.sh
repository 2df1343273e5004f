#!/usr/bin/env bash
# The mask-criteria experiments of the study: one experiment per criterion (resumable: rerun to continue).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs}
for criterion in large_final magnitude_increase movement large_init_large_final large_final_same_sign \
                 random small_final large_init small_init magnitude_increase_same_sign; do
  python -m tf_lottery.main --flagfile=flags/lenet300_mnist_deconstructing.cfg --output_dir="$OUT" \
    --mask_criterion=$criterion --experiment_name=lenet300_mnist_criterion_$criterion --noprogress
done
