"""Where the first layer's ticket mask keeps weights, against each dataset's pixel variance.

    TFDS_DATA_DIR=../shared/tensorflow_datasets python benchmarks/results/transfer_mnist_fashion/input_masks.py \
        --mnist_source=runs/lenet300_mnist_24k --fashion_source=runs/lenet300_fashion_mnist_24k > input_masks.txt

For each source experiment, level and dataset: the fraction of fc1's weights kept
from each input pixel (averaged over replicates), in the quartile of pixels with
the highest and the lowest variance over that dataset's training images, and its
correlation with the variance over all 784 pixels.
"""

import argparse
import os

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
from tf_lottery import data  # noqa: E402
from tf_lottery.experiment import files  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist_source", required=True)
    parser.add_argument("--fashion_source", required=True)
    parser.add_argument("--levels", default="7,15")
    parser.add_argument("--replicates", type=int, default=2)
    args = parser.parse_args()
    variance = {}
    for name in ("mnist", "fashion_mnist"):
        splits = data.load(name, os.environ.get("TFDS_DATA_DIR"), 5000, False)
        variance[name] = splits.train_images.reshape(len(splits.train_images), -1).astype(np.float64).std(0) ** 2
    print("source | level | remaining in fc1 | pixel variance of | kept, top quartile | kept, bottom quartile | correlation")
    for source, folder in (("mnist", args.mnist_source), ("fashion_mnist", args.fashion_source)):
        for level in (int(v) for v in args.levels.split(",")):
            kept = np.mean([files.read_masks(os.path.join(folder, f"replicate_{r}", f"level_{level:02d}", "imp", "mask.npz"))
                            ["fc1/kernel"].mean(axis=1) for r in range(args.replicates)], axis=0)
            for name, v in variance.items():
                top, bottom = v >= np.percentile(v, 75), v <= np.percentile(v, 25)
                print(f"{source} | {level} | {kept.mean():.2%} | {name} | {kept[top].mean():.2%} | "
                      f"{kept[bottom].mean():.2%} | {np.corrcoef(kept, v)[0, 1]:.2f}")


if __name__ == "__main__":
    main()
