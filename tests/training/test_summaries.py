"""A run's TensorBoard events: the scalars of metrics.csv, written as tf.summary.scalar writes them."""

import glob
import os

import tensorflow as tf

from tf_lottery.training import summaries


def _events(directory):
    """[(step, tag, value, plugin name)] of the event files in `directory`, in writing order."""
    found = []
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.append((event.step, value.tag, float(tf.make_ndarray(value.tensor)),
                              value.metadata.plugin_data.plugin_name, value.tensor.dtype))
    return found


def test_the_log_writes_what_tf_summary_scalar_writes(tmp_path):
    rows = [(0, "validation", {"loss": 2.3, "accuracy": 0.1}), (100, "train", {"loss": 0.25, "learning_rate": 1.2e-3})]
    log = summaries.MetricsLog(str(tmp_path / "run" / "metrics.csv"), str(tmp_path / "run"))
    for iteration, split, values in rows:
        log.log(iteration, split, values)
    log.close()
    reference = tf.summary.create_file_writer(str(tmp_path / "reference"))
    with reference.as_default():
        for iteration, split, values in rows:
            for metric, value in values.items():
                tf.summary.scalar(f"{split}/{metric}", value, step=iteration)
    reference.close()
    written = _events(tmp_path / "run")
    assert len(written) == 4 and written[0][:4] == (0, "validation/loss", tf.constant(2.3).numpy(), "scalars")
    assert written == _events(tmp_path / "reference")
    csv_rows = summaries.read_metrics(str(tmp_path / "run" / "metrics.csv"))
    assert [(r["iteration"], f"{r['split']}/{r['metric']}") for r in csv_rows] == [w[:2] for w in written]
