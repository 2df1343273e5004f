"""tf.distribute: several replicas on logical CPUs, two workers on localhost, mixed precision.

Logical CPU devices can be set only before TensorFlow initialises, and a
multi-worker strategy only at program start, so every distributed run happens in
a fresh subprocess; this process only reads what they wrote.
"""

import csv
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, as_flags, run_main
from tf_lottery.config import ConfigError, ExperimentConfig
from tf_lottery.data import pipeline
from tf_lottery.data.datasets import DatasetInfo

# Tiny but real: MNIST, a 784-16-10 MLP, two levels (the second pruned), checkpoints mid-run.
EXPERIMENT = dict(
    dataset="mnist", model="mlp", hidden_units=(16,), levels=1, iterations=40, batch_size=60,
    eval_every=20, checkpoint_every=20, eval_batch_size=5000, prune_rate=0.5, progress=False,
    experiment_name="distributed",
)
RESULT_EXACT = ("replicate", "level", "variant", "density", "remaining_weights", "total_weights",
                "early_stop_iteration", "final_iteration")
RESULT_CLOSE = ("final_test_accuracy", "early_stop_test_accuracy", "best_val_accuracy", "final_validation_accuracy",
                "final_test_loss", "early_stop_validation_loss")
RUN_TIMEOUT = 300  # seconds; generous because the test machine may be shared


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO, **extra}


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_results_match(rows, reference):
    """Same runs and densities exactly; metrics equal up to the order of float reductions."""
    assert len(rows) == len(reference) > 0
    for row, ref in zip(rows, reference):
        for column in RESULT_EXACT:
            assert row[column] == ref[column], (column, row, ref)
        for column in RESULT_CLOSE:
            # 1e-4 is one MNIST test image of accuracy; losses agree to ~1e-7 in practice.
            assert abs(float(row[column]) - float(ref[column])) <= 1e-4, (column, row[column], ref[column])


# One subprocess: the single-device reference, the 2-replica mirrored run and a mixed-precision run.
MIRRORED_SCRIPT = textwrap.dedent('''
    import json, sys
    import tf_lottery
    from tf_lottery import distribute
    distribute.split_cpu(2)  # before anything initialises TensorFlow

    import numpy as np
    import tensorflow as tf
    from tf_lottery.config import ExperimentConfig
    from tf_lottery.lottery import imp
    from tf_lottery.pruning import constraint, masks as masks_lib, prunable
    from tf_lottery.training import checkpoints

    experiment_values, output_dir = json.loads(sys.argv[1]), sys.argv[2]

    def replicas(strategy, variable):
        return [np.asarray(v) for v in strategy.experimental_local_results(variable)]

    def inspect(experiment):
        """Per-replica state of the last run's model: pruned weights, masks, replica agreement."""
        trainer = experiment.bench.trainer(experiment.config)  # the one every run trained with
        strategy, model, paths = experiment.bench.strategy, trainer.model, experiment.paths
        saved = masks_lib.load(paths.run(0, 1, "imp").mask)
        layers = {}
        for weight in prunable.prunable_weights(model):
            kernels = replicas(strategy, weight.variable)
            masks = replicas(strategy, weight.mask)
            pruned = saved[weight.path] == 0
            layers[weight.path] = dict(
                replicas=len(kernels), pruned=int(pruned.sum()),
                nonzero_pruned=[int(np.count_nonzero(k[pruned])) for k in kernels],
                masks_equal_saved=[bool(np.array_equal(m, saved[weight.path])) for m in masks],
                kernels_identical=all(np.array_equal(k, kernels[0]) for k in kernels),
                kernel_dtype=weight.variable.dtype.name, mask_dtype=weight.mask.dtype.name,
                compute_dtype=weight.layer.compute_dtype,
            )
        # A reset (theta_0, then the mask) must reach every replica, not only the first.
        theta = checkpoints.read_weights(paths.theta_init(0))
        checkpoints.assign_weights(model, theta)
        masks_lib.apply_masks(model, saved)
        reset_ok = []
        mask_of = {id(w.variable): saved[w.path] for w in prunable.prunable_weights(model)}
        for variable, value in zip(constraint.model_weights(model), theta):
            reset_ok += [bool(np.array_equal(r, value * mask_of.get(id(variable), 1.0)))
                         for r in replicas(strategy, variable)]
        final = np.load(paths.run(0, 1, "imp").final_weights)
        final_pruned_nonzero = sum(
            int(np.count_nonzero(final[f"w{i:04d}"][mask_of[id(v)] == 0]))
            for i, v in enumerate(constraint.model_weights(model)) if id(v) in mask_of)
        return dict(layers=layers, reset_ok=reset_ok, final_pruned_nonzero=final_pruned_nonzero,
                    final_dtypes=sorted({final[k].dtype.name for k in final.files if k != "names"}),
                    loss_scaling=bool(trainer.loss_scaling))

    report = {}
    for name, strategy_name, precision in (("single", "default", "float32"), ("mirrored", "mirrored", "float32"),
                                           ("mixed", "mirrored", "mixed_float16")):
        config = ExperimentConfig.from_flat(dict(experiment_values, output_dir=f"{output_dir}/{name}",
                                                 strategy=strategy_name, mixed_precision=precision))
        experiment = imp.ImpLoop(config, distribute.make_strategy(config.run))
        experiment.run()
        report[name] = dict(replicas=experiment.bench.strategy.num_replicas_in_sync, results=experiment.paths.results,
                            **inspect(experiment))
    with open(f"{output_dir}/report.json", "w") as f:
        json.dump(report, f)
''')


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("mirrored")
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in EXPERIMENT.items()}
    process = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, json.dumps(values), str(output_dir)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    with open(output_dir / "report.json") as f:
        return json.load(f)


def test_mirrored_on_two_logical_cpus_matches_the_single_device_run(mirrored):
    assert mirrored["single"]["replicas"] == 1
    assert mirrored["mirrored"]["replicas"] == 2
    assert_results_match(_read_csv(mirrored["mirrored"]["results"]), _read_csv(mirrored["single"]["results"]))


def test_pruned_weights_stay_exactly_zero_on_every_replica(mirrored):
    for name, layer in mirrored["mirrored"]["layers"].items():
        assert layer["replicas"] == 2 and layer["pruned"] > 0, name
        assert layer["nonzero_pruned"] == [0, 0], name
        assert layer["masks_equal_saved"] == [True, True], name
        assert layer["kernels_identical"], name  # replicas never drift apart
    assert mirrored["mirrored"]["final_pruned_nonzero"] == 0


def test_resets_assign_every_replica(mirrored):
    assert mirrored["mirrored"]["reset_ok"] and all(mirrored["mirrored"]["reset_ok"])


def test_mixed_float16_keeps_masks_exact_and_variables_float32(mirrored):
    mixed = mirrored["mixed"]
    assert mixed["loss_scaling"]
    for name, layer in mixed["layers"].items():
        assert layer["compute_dtype"] == "float16", name
        assert (layer["kernel_dtype"], layer["mask_dtype"]) == ("float32", "float32"), name
        assert layer["pruned"] > 0 and layer["nonzero_pruned"] == [0, 0], name
        assert layer["masks_equal_saved"] == [True, True], name
    assert mixed["final_pruned_nonzero"] == 0 and mixed["final_dtypes"] == ["float32"]
    rows = _read_csv(mixed["results"])
    assert [float(r["density"]) for r in rows] == [float(r["density"]) for r in _read_csv(mirrored["single"]["results"])]
    assert all(float(r["final_test_accuracy"]) > 0.5 for r in rows)  # it trained, in half precision


# Two workers on localhost ------------------------------------------------------

# Runs the real command line, recording every file this process opens for writing,
# and can stop both workers right after a given checkpoint, as a killed job would.
WORKER_SCRIPT = textwrap.dedent('''
    import builtins, json, os, sys
    audit_path, stop_at = os.environ["AUDIT_LOG"], os.environ.get("STOP_AT")
    real_open = builtins.open

    def record(kind, path):
        with real_open(audit_path, "a") as f:
            f.write(json.dumps([kind, os.path.abspath(str(path))]) + "\\n")

    def audited_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            record("open", file)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = audited_open
    for name in ("replace", "makedirs", "mkdir", "remove"):
        def wrapped(path, *args, _real=getattr(os, name), _name=name, **kwargs):
            record(_name, args[0] if _name == "replace" else path)
            return _real(path, *args, **kwargs)
        setattr(os, name, wrapped)

    import tf_lottery
    import tensorflow as tf
    from tf_lottery.training import checkpoints

    real_manager = tf.train.CheckpointManager.__init__
    def manager(self, checkpoint, directory, *args, **kwargs):
        record("checkpoint", directory)
        real_manager(self, checkpoint, directory, *args, **kwargs)
    tf.train.CheckpointManager.__init__ = manager
    real_writer = tf.summary.create_file_writer
    def writer(logdir, *args, **kwargs):
        record("tensorboard", logdir)
        return real_writer(logdir, *args, **kwargs)
    tf.summary.create_file_writer = writer

    if stop_at:
        level, iteration = (int(v) for v in stop_at.split(":"))
        real_save = checkpoints.RunCheckpoint.save
        def save(self, at):
            real_save(self, at)
            if at == iteration and f"level_{level:02d}" in self.directory:
                os._exit(3)  # no clean-up at all, like a killed job
        checkpoints.RunCheckpoint.save = save

    from tf_lottery import main
    sys.argv = ["tf_lottery"] + sys.argv[1:]
    main.run()
''')


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(tmp_path, job, flags, stop_at=None):
    """Runs a two-worker job to its end (or timeout); returns [(returncode, output, audit, tmpdir, pid)]."""
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    processes, files = [], []
    for index in range(2):
        tmpdir = tmp_path / f"{job}_tmp{index}"
        tmpdir.mkdir()
        audit, log = tmp_path / f"{job}_audit{index}.jsonl", tmp_path / f"{job}_worker{index}.log"
        env = _env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   AUDIT_LOG=str(audit), TMPDIR=str(tmpdir), **({"STOP_AT": stop_at} if stop_at else {}))
        out = open(log, "w")
        processes.append(subprocess.Popen([sys.executable, str(script), *flags], cwd=REPO, env=env,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        files.append((out, log, audit, tmpdir))
    try:
        codes = [p.wait(timeout=RUN_TIMEOUT) for p in processes]
    finally:
        for p in processes:  # a worker left waiting on a dead peer must not outlive the test
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for out, *_ in files:
            out.close()
    results = []
    for code, process, (_, log, audit, tmpdir) in zip(codes, processes, files):
        audited = [json.loads(line) for line in open(audit)] if os.path.exists(audit) else []
        results.append((code, log.read_text()[-3000:], audited, tmpdir, process.pid))
    return results


def _flags(output_dir, **overrides):
    return as_flags({**EXPERIMENT, "output_dir": str(output_dir), "strategy": "multi_worker", **overrides})


def _under(paths, root):
    root = os.path.abspath(root) + os.sep
    return sorted({p for _, p in paths if (p + os.sep).startswith(root)})


def test_two_workers_on_localhost_only_the_chief_writes_and_a_restarted_job_resumes(tmp_path, mirrored):
    output_dir = tmp_path / "runs"
    root = output_dir / EXPERIMENT["experiment_name"]
    level1 = root / "replicate_0" / "level_01" / "imp"

    # Job 1 dies right after level 1's checkpoint at iteration 20, on both workers.
    killed = _run_workers(tmp_path, "job1", _flags(output_dir), stop_at="1:20")
    assert [code for code, *_ in killed] == [3, 3], [log for _, log, *_ in killed]
    assert os.path.exists(root / "replicate_0" / "level_00" / "imp" / "result.json")
    assert not os.path.exists(level1 / "result.json")
    assert glob.glob(str(level1 / "checkpoints" / "ckpt-20*"))

    # The whole job restarts with the same command: level 0 is skipped, level 1 resumes at 20.
    finished = _run_workers(tmp_path, "job2", _flags(output_dir))
    assert [code for code, *_ in finished] == [0, 0], [log for _, log, *_ in finished]

    for (_, _, chief_audit, _, _), (_, _, other_audit, other_tmp, _) in (killed, finished):
        # Worker 1 read the chief's files but wrote nothing in the experiment folder...
        assert _under(other_audit, output_dir) == []
        assert _under(chief_audit, root)  # (the audit does see the chief's writes)
        # ...and its scratch copies went to its own temporary directory.
        assert _under(other_audit, other_tmp)
    assert os.listdir(finished[1][3]) == []  # removed at the end of the job
    # TensorBoard event files are named ...<host>.<pid>.<n>.v2: only the two jobs' chiefs wrote any.
    events = glob.glob(str(root / "**" / "events.out.tfevents.*"), recursive=True)
    assert {int(os.path.basename(p).split(".")[-3]) for p in events} == {killed[0][4], finished[0][4]}
    assert not os.path.exists(level1 / "checkpoints")

    # The resumed run reads as if never interrupted, and matches one device with the same global batch.
    metrics = _read_csv(level1 / "metrics.csv")
    test_accuracy = [int(r["iteration"]) for r in metrics if (r["split"], r["metric"]) == ("test", "accuracy")]
    assert test_accuracy == [0, 20, 40]
    assert_results_match(_read_csv(root / "results.csv"), _read_csv(mirrored["single"]["results"]))


# Flags, configuration and the input pipeline -----------------------------------


def test_indivisible_global_batch_is_a_flag_error_and_writes_nothing(tmp_path):
    process = run_main(*_flags(tmp_path, strategy="mirrored", num_cpu_devices=7, batch_size=60))
    assert process.returncode == 2
    assert process.stderr.strip().splitlines()[-1] == "tf_lottery: error: --batch_size: 60 is not divisible by the 7 replicas"
    assert os.listdir(tmp_path) == []


def test_tpu_address_needs_the_tpu_strategy():
    with pytest.raises(ConfigError, match="--tpu"):
        ExperimentConfig.from_flat({"tpu": "grpc://10.0.0.2:8470"})
    with pytest.raises(ConfigError, match="--num_cpu_devices"):
        ExperimentConfig.from_flat({"num_cpu_devices": -1})


@pytest.mark.parametrize("workers, replicas_per_worker, start", [(2, 1, 0), (2, 2, 3), (3, 1, 5)])
def test_worker_shards_together_feed_each_replica_the_single_device_batch(workers, replicas_per_worker, start):
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    labels = np.arange(50, dtype=np.int64)
    info = DatasetInfo(name="toy", input_shape=(1, 1, 1), num_classes=50, mean=(0.0,), std=(1 / 255,))
    replicas, per_replica, steps = workers * replicas_per_worker, 2, 7

    def labels_of(dataset, count):
        return [y.numpy().tolist() for _, y in dataset.take(count)]

    single = labels_of(pipeline.training_dataset(images, labels, info, per_replica, seed=1, start_iteration=start,
                                                 batches_per_step=replicas), steps * replicas)
    shards = [labels_of(pipeline.training_dataset(images, labels, info, per_replica, seed=1, start_iteration=start,
                                                  batches_per_step=replicas_per_worker, num_shards=workers,
                                                  shard_index=w), steps * replicas_per_worker)
              for w in range(workers)]
    # Global replica r = worker * replicas_per_worker + local replica: step s, replica r gets batch s*R + r.
    for step in range(steps):
        for worker in range(workers):
            for local in range(replicas_per_worker):
                expected = single[step * replicas + worker * replicas_per_worker + local]
                assert shards[worker][step * replicas_per_worker + local] == expected
