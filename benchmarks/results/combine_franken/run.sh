#!/usr/bin/env bash
# Every command of the combining-tickets and Frankenmodel study (resumable: rerun to continue;
# a finished cell trains nothing). `run.sh combine` or `run.sh franken` runs one half (they can
# run side by side); no argument runs both, one after the other. Then summarize.py.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs}
PARENT=$OUT/lenet300_mnist_combine            # MNIST, 3 replicates (three θ0)
PARTNER=$OUT/lenet300_mnist_combine_partner   # the same θ0s, other data orders
SPLIT=$OUT/lenet300_mnist04                   # MNIST digits 0-4 only: task A of split MNIST
main() { python -m tf_lottery.main --flagfile=flags/lenet300_mnist_combine.cfg --output_dir="$OUT" --noprogress "$@"; }
branch() { python -m tf_lottery.branch --noprogress "$@"; }

combine() {
  main
  main --data_seed=1000 --experiment_name=lenet300_mnist_combine_partner
  # Ensembles of 2 and 3 replicates' tickets (no training) and soups of 3 copies from one start.
  branch --experiment_dir="$PARENT" --branch=combine --how=ensemble,average --members=2,3 --copies=3 --levels=0-6
  # Unions and intersections of two tickets that share θ0, retrained from θ0.
  branch --experiment_dir="$PARENT" --branch=combine --how=union,intersection --partner="$PARTNER" --levels=1-6
}

franken() {
  main
  main --classes=0-4 --experiment_name=lenet300_mnist04
  # Split MNIST: task A digits 0-4 at 25%, 6.3% and 1.6% of its weights, task B digits 5-9.
  branch --experiment_dir="$SPLIT" --branch=franken --dataset=mnist --classes=5-9 --levels=2,4,6
  branch --experiment_dir="$SPLIT" --branch=franken --dataset=mnist --classes=5-9 --head=shared --levels=2,4,6
  # MNIST -> Fashion-MNIST: task A all ten digits.
  branch --experiment_dir="$PARENT" --branch=franken --dataset=fashion_mnist --levels=2,4,6
  # Three tasks: B pruned to a fifth of its share, leaving room for C.
  branch --experiment_dir="$SPLIT" --branch=franken --tasks=mnist:5-9,fashion_mnist --prune_b=0.8 --levels=4
}

case "${1:-all}" in
  combine) combine ;;
  franken) franken ;;
  all) combine; franken ;;
  *) echo "usage: $0 [combine|franken]" >&2; exit 2 ;;
esac
