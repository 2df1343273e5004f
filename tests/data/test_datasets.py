"""Splits never overlap; the training stream is the same in a run and in its resumption."""

import numpy as np
import pytest

from tf_lottery import data
from tf_lottery.data import pipeline


@pytest.fixture(scope="module")
def mnist():
    return data.load("mnist", None, 5000, False)


def test_validation_is_held_out_of_train_and_never_the_test_set(mnist):
    assert (mnist.info.train_size, mnist.info.validation_size, mnist.info.test_size) == (55000, 5000, 10000)
    assert not set(mnist.train_indices) & set(mnist.validation_indices)
    assert len(set(mnist.train_indices) | set(mnist.validation_indices)) == 60000
    again = data.load("mnist", None, 5000, True)  # same split whatever the other arguments
    np.testing.assert_array_equal(again.validation_indices, mnist.validation_indices)
    assert mnist.info.input_shape == (28, 28, 1) and mnist.info.num_classes == 10
    assert 0.1 < mnist.info.mean[0] < 0.15 and 0.25 < mnist.info.std[0] < 0.35


def _batches(splits, start, count, seed=7, batch=50):
    dataset = pipeline.training_dataset(splits.train_images, splits.train_labels, splits.info, batch, seed,
                                        start_iteration=start)
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_resuming_the_stream_at_iteration_t_gives_batch_t(mnist):
    # 55,000 / 50 = 1,100 batches an epoch: the window crosses an epoch boundary.
    whole = _batches(mnist, 1095, 10)
    resumed = _batches(mnist, 1099, 6)
    for (x1, y1), (x2, y2) in zip(whole[4:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_epochs_are_permutations_and_seeds_change_the_order(mnist):
    small = data.Splits(mnist.info, mnist.train_images[:100], np.arange(100), *(None,) * 6)
    labels = np.concatenate([y for _, y in _batches(small, 0, 4, batch=50)])
    assert sorted(labels[:100]) == list(range(100)) and sorted(labels[100:]) == list(range(100))
    assert not np.array_equal(labels[:100], labels[100:]), "each epoch is shuffled anew"
    other = np.concatenate([y for _, y in _batches(small, 0, 2, seed=8, batch=50)])
    assert not np.array_equal(labels[:100], other)


def test_preprocessing_normalises_with_training_statistics(mnist):
    x, _ = _batches(mnist, 0, 1, batch=2000)[0]
    assert x.dtype == np.float32 and x.shape == (2000, 28, 28, 1)
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1


def test_unknown_and_unprepared_datasets_are_one_line_errors(tmp_path):
    with pytest.raises(data.DataError, match="--dataset"):
        data.describe("no_such_dataset_anywhere")
    with pytest.raises(data.DataError, match="--data_dir") as error:
        data.load("mnist", str(tmp_path), 5000, False)
    assert "\n" not in str(error.value)
