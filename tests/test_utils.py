"""Atomic files, advisory locks and derived seeds."""

import os

from tf_lottery import utils


def test_exclusive_lock_waits_or_reports_a_holder(tmp_path):
    path = str(tmp_path / "run.lock")
    with utils.exclusive_lock(path) as held:
        assert held
        with utils.exclusive_lock(path, wait=False) as second:  # a second open file: another holder
            assert not second
    with utils.exclusive_lock(path, wait=False) as again:
        assert again, "the lock is released on exit"


def test_atomic_path_leaves_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "results.csv")
    utils.write_text(path, "old\n")
    try:
        with utils.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert open(path).read() == "old\n"
    assert os.listdir(tmp_path) == ["results.csv"]


def test_derived_seeds_are_stable_and_distinct():
    assert utils.derive_seed(0, "data") == utils.derive_seed(0, "data")
    assert len({utils.derive_seed(0, "data"), utils.derive_seed(1, "data"), utils.derive_seed(0, "init")}) == 3
    assert 0 <= utils.derive_seed(2**40, "x") < 2**31
