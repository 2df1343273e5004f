"""--classes: a subset of the labels in every split, relabelled 0..n-1, recorded in dataset.json."""

import json
import os

import numpy as np
import pytest

from tf_lottery import data
from tf_lottery.config import ConfigError, DataConfig, ExperimentConfig
from tf_lottery.lottery.imp import run_experiment

from conftest import run_main, small_config


@pytest.fixture(scope="module")
def whole():
    return data.load("mnist", None, 5000, False)


@pytest.fixture(scope="module")
def upper():
    return data.load("mnist", None, 5000, False, (5, 6, 7, 8, 9))


def test_subset_relabels_and_no_other_label_leaks_into_any_split(whole, upper):
    assert upper.info.num_classes == 5 and upper.info.classes == (5, 6, 7, 8, 9)
    for split in ("train", "validation", "test"):
        labels = getattr(upper, f"{split}_labels")
        assert labels.min() == 0 and labels.max() == 4, split
        original = getattr(whole, f"{split}_labels")
        chosen = original >= 5
        assert len(labels) == int(chosen.sum()), split  # every example of those classes, no other
        np.testing.assert_array_equal(labels, original[chosen] - 5)
        np.testing.assert_array_equal(getattr(upper, f"{split}_images"), getattr(whole, f"{split}_images")[chosen])
    # the subset is taken from the whole dataset's carving: indices of the whole train split
    np.testing.assert_array_equal(upper.train_indices, whole.train_indices[whole.train_labels >= 5])
    np.testing.assert_array_equal(upper.validation_indices, whole.validation_indices[whole.validation_labels >= 5])
    assert (upper.info.train_size, upper.info.test_size) == (len(upper.train_labels), len(upper.test_labels))


def test_complementary_subsets_never_share_an_example(upper):
    lower = data.load("mnist", None, 5000, False, (0, 1, 2, 3, 4))
    assert not set(lower.train_indices) & set(upper.train_indices)
    assert not set(lower.validation_indices) & set(upper.validation_indices)
    assert not set(lower.train_indices) & set(upper.validation_indices)
    assert len(lower.test_labels) + len(upper.test_labels) == 10000


def test_an_unordered_subset_relabels_by_increasing_original_label(whole):
    picked = data.load("mnist", None, 5000, False, (3, 8))  # as DataConfig(classes="8,3") gives it
    test = whole.test_labels
    np.testing.assert_array_equal(picked.test_labels, (test[(test == 3) | (test == 8)] == 8).astype(np.int64))
    assert DataConfig(classes="8,3").class_list() == (3, 8)


def test_spellings_of_one_subset_are_one_experiment_and_the_default_keeps_hashes():
    a, b = (ExperimentConfig.from_flat({"classes": text}) for text in ("0-4", "4,3,0,1,2"))
    assert a.data.classes == b.data.classes == "0-4"
    assert a.experiment_hash() == b.experiment_hash() != ExperimentConfig().experiment_hash()
    assert ExperimentConfig.from_flat({"classes": ""}).experiment_hash() == ExperimentConfig().experiment_hash()


@pytest.mark.parametrize("text, message", [("x", "expected labels and ranges"), ("3", "at least two classes"),
                                           ("5-2", "increasing ranges")])
def test_bad_subsets_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_flat({"classes": text})


def test_a_label_the_dataset_lacks_is_one_line_exit_2(tmp_path):
    result = run_main("--classes=8-10", "--dry_run", f"--output_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("--classes: mnist has 10 classes (labels 0-9); 10 is not one of them")
    assert not os.listdir(tmp_path)


def test_an_experiment_on_a_subset_trains_on_it_and_records_the_mapping(tmp_path):
    config = small_config(tmp_path, classes="5-9", levels=0, iterations=40)
    run_experiment(config)
    root = os.path.join(tmp_path, config.experiment_name)
    with open(os.path.join(root, "dataset.json")) as f:
        info = json.load(f)
    assert info["classes"] == [5, 6, 7, 8, 9] and info["num_classes"] == 5
    with open(os.path.join(root, "replicate_0", "level_00", "imp", "result.json")) as f:
        result = json.load(f)
    assert result["final_test_accuracy"] > 0.2  # 5 classes: chance is 0.2; the output layer has 5 units
