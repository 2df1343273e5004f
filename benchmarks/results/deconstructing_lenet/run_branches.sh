#!/usr/bin/env bash
# The branch experiments of the study, over the criteria experiments run_criteria.sh made
# (resumable: rerun to continue; a finished cell trains nothing).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs}
LAYERWISE=$OUT/lenet300_mnist_criterion_large_final
GLOBAL=$OUT/lenet300_mnist_criterion_large_final_global
branch() { python -m tf_lottery.branch --noprogress "$@"; }

# What the survivors start from: the ticket's mask with five other starts, and a random mask.
for init in fresh reshuffle signed_reinit signed_constant constant; do
  branch --experiment_dir="$LAYERWISE" --branch=reinit --init=$init
done
branch --experiment_dir="$LAYERWISE" --branch=random_prune

# Pruning at initialisation ranks layers against each other in the papers: the IMP ticket to
# compare with is pruned globally too (the output layer keeps its own, lower rate).
python -m tf_lottery.main --flagfile=flags/lenet300_mnist_deconstructing.cfg --output_dir="$OUT" \
  --pruning_scope=global --experiment_name=lenet300_mnist_criterion_large_final_global --noprogress
branch --experiment_dir="$GLOBAL" --branch=pai --method=snip,grasp,synflow,magnitude_init,random
branch --experiment_dir="$GLOBAL" --branch=pai --method=snip,grasp,synflow,magnitude_init \
  --ablation=shuffle_layerwise,reinit,invert --levels=2,4,6
branch --experiment_dir="$GLOBAL" --branch=random_prune
branch --experiment_dir="$LAYERWISE" --branch=pai --method=snip,synflow,magnitude_init --levels=2,4,6

# Supermasks: the untrained network under large_final_same_sign at every level, θ0 and signed
# constants; masks learned over the frozen weights of the dense network and of level 2's ticket.
for weights in init signed_constant; do
  branch --experiment_dir="$LAYERWISE" --branch=supermask --weights=$weights --levels=0-6
  branch --experiment_dir="$LAYERWISE" --branch=supermask --supermask=learned --weights=$weights --levels=0,2
done
