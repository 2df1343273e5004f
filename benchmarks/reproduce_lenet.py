"""Reproduces the paper's LeNet-300-100 / MNIST result and records it.

    TFDS_DATA_DIR=/work/shared/tensorflow_datasets \
        python benchmarks/reproduce_lenet.py --output_dir=/work/runs --levels=12 --replicates=2

Runs flags/lenet300_mnist.cfg (50K iterations a level, Adam 1.2e-3, batch 60,
layerwise pruning 20% / output 10%) with the reinit and random_prune controls,
then builds the report into benchmarks/results/lenet300_mnist/ together with
results.csv and RUN.md (date, machine, wall time, how much finished).

The replicates can train side by side, one process each (the engine locks each
run, so processes sharing the experiment never train one run twice):

    python benchmarks/reproduce_lenet.py --replicate=0 &
    python benchmarks/reproduce_lenet.py --replicate=1 &

Resumable: run the same command again and finished runs are skipped (the engine
checks each run's result.json). Every invocation appends its wall time to
<experiment>/reproduction_sessions.json, so RUN.md reports the total across
interruptions. `--report_only` rebuilds the report from whatever has finished,
which is how a run still in progress is recorded.

Expected (paper, figure 3/4): the ticket keeps about 98% test accuracy down to
about 3.6% of the weights; both controls fall behind below about 21%.
Time: 3 runs a level after level 0. One process trains the replicates' runs side by
side (--parallel_runs=auto: 8 at a time, each level's tickets beside the previous
level's controls), so the full record, 20 levels x 5 replicates (305 runs), is about
6.5 hours on an idle 2-core CPU (level 0, five runs side by side: 6.5 minutes):

    python benchmarks/reproduce_lenet.py --output_dir=/work/runs/record --levels=20 --replicates=5
"""

import argparse
import csv
import datetime
import glob
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILE = os.path.join(REPO, "flags", "lenet300_mnist.cfg")
EXPERIMENT_NAME = "lenet300_mnist"
DEFAULT_REPORT_DIR = os.path.join(REPO, "benchmarks", "results", "lenet300_mnist")
SESSIONS_FILE = "reproduction_sessions.json"


def machine_description() -> dict:
    """CPU model, core count and any NVIDIA GPU, read without loading TensorFlow."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, check=False)
        gpu = ", ".join(query.stdout.split("\n")).strip(", ") or "none"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def read_sessions(experiment_dir: str) -> list:
    path = os.path.join(experiment_dir, SESSIONS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def write_sessions(experiment_dir: str, sessions: list):
    os.makedirs(experiment_dir, exist_ok=True)
    path = os.path.join(experiment_dir, SESSIONS_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(sessions, f, indent=2)
    os.replace(path + ".tmp", path)


def run_training(args, experiment_dir: str) -> int:
    """Runs (or resumes) the experiment, recording this session's wall time as it goes."""
    command = [
        sys.executable, "-m", "tf_lottery.main",
        f"--flagfile={FLAGFILE}",
        f"--levels={args.levels}",
        f"--replicates={args.replicates}",
        f"--output_dir={args.output_dir}",
        f"--experiment_name={EXPERIMENT_NAME}",
        "--nodownload",  # the prepared MNIST must be used; there is no network to fall back on
    ] + ([f"--data_dir={args.data_dir}"] if args.data_dir else []) \
      + ([f"--replicate={args.replicate}"] if args.replicate >= 0 else []) + args.extra_flags
    sessions = read_sessions(experiment_dir)
    session = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "started_epoch": round(time.time(), 1),
        "command": " ".join(command),
        "machine": machine_description(),
        "wall_seconds": 0.0,
        "finished": False,
    }
    sessions.append(session)
    write_sessions(experiment_dir, sessions)
    print("running:", session["command"], flush=True)
    started = time.time()
    process = subprocess.Popen(command, cwd=REPO)
    # Re-write the session record every minute so an interrupted (killed) session
    # still counts towards the total wall time.
    while True:
        try:
            code = process.wait(timeout=60)
            break
        except subprocess.TimeoutExpired:
            session["wall_seconds"] = round(time.time() - started, 1)
            write_sessions(experiment_dir, sessions)
    session["wall_seconds"] = round(time.time() - started, 1)
    session["finished"] = code == 0
    session["exit_code"] = code
    write_sessions(experiment_dir, sessions)
    return code


def wall_seconds(sessions: list) -> float:
    """Seconds during which at least one session ran: parallel sessions count once."""
    starts = [s.get("started_epoch") or datetime.datetime.fromisoformat(s["started"]).timestamp() for s in sessions]
    intervals = sorted((start, start + s.get("wall_seconds", 0.0)) for start, s in zip(starts, sessions))
    total, end = 0.0, -math.inf
    for start, stop in intervals:
        total += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return total


def count_rows(results_path: str):
    """(finished runs, replicates seen, deepest level with all its variants) from results.csv."""
    if not os.path.exists(results_path):
        return 0, 0, -1
    with open(results_path, newline="") as f:
        rows = list(csv.DictReader(f))
    replicates = {r["replicate"] for r in rows}
    return len(rows), len(replicates), max((int(r["level"]) for r in rows), default=-1)


def write_run_notes(args, experiment_dir: str, report_dir: str):
    """RUN.md: when, where, how long and how much of the planned run finished."""
    sessions = read_sessions(experiment_dir)
    results = os.path.join(experiment_dir, "results.csv")
    runs, replicates, deepest = count_rows(results)
    planned = args.replicates * (1 + 3 * args.levels)
    wall = wall_seconds(sessions)
    machine = sessions[-1]["machine"] if sessions else machine_description()
    with open(results, newline="") if os.path.exists(results) else open(os.devnull) as f:
        train_seconds = sum(float(r["train_seconds"]) for r in csv.DictReader(f)) if os.path.exists(results) else 0.0
    finished_at = [os.path.getmtime(p) for p in glob.glob(os.path.join(experiment_dir, "replicate_*", "level_*", "*", "result.json"))]
    first_start = min((datetime.datetime.fromisoformat(s["started"]).timestamp() for s in sessions), default=None)
    elapsed = (max(finished_at) - first_start) / 3600 if finished_at and first_start else 0.0
    state = "complete" if runs >= planned else "PARTIAL (still running or interrupted when this was recorded)"
    lines = [
        "# LeNet-300-100 on MNIST: reproduction record",
        "",
        f"- Recorded: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Flagfile: `flags/lenet300_mnist.cfg` with `--levels={args.levels} --replicates={args.replicates}` "
        "(controls reinit and random_prune)",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, GPU: {machine['gpu']} "
        f"({machine['platform']}, Python {machine['python']}); shared with other jobs, so times are pessimistic",
        f"- Wall time so far: {wall / 3600:.2f} h over {len(sessions)} session(s); "
        f"training time in finished runs: {train_seconds / 3600:.2f} h "
        f"({train_seconds / max(runs, 1):.0f} s a run); from the first start to the last finished run: "
        f"{elapsed:.2f} h (counts every process that trained this experiment)",
        f"- State: {state}: {runs} of {planned} planned runs finished, "
        f"{replicates} replicate(s) started, deepest level reached {deepest} of {args.levels}",
        "",
        "Sessions:",
        "",
    ]
    for s in sessions:
        which = re.search(r"--replicate=(\d+)", s["command"])
        lines.append(f"- {s['started']}: {s['wall_seconds'] / 60:.1f} min, "
                     f"{'replicate ' + which.group(1) if which else 'all replicates'}, "
                     f"{'finished' if s.get('finished') else 'not finished (running or interrupted)'}")
    lines += ["", "See report.md for the results table and figures, and benchmarks/README.md (Reproduction) "
              "for how these numbers compare with the paper.", ""]
    with open(os.path.join(report_dir, "RUN.md"), "w") as f:
        f.write("\n".join(lines))


def build_report(args, experiment_dir: str) -> int:
    report_dir = args.report_dir
    os.makedirs(report_dir, exist_ok=True)
    code = subprocess.call([sys.executable, "-m", "tf_lottery.report",
                            f"--experiment_dir={experiment_dir}", f"--output={report_dir}"], cwd=REPO)
    results = os.path.join(experiment_dir, "results.csv")
    if os.path.exists(results):
        shutil.copyfile(results, os.path.join(report_dir, "results.csv"))
    write_run_notes(args, experiment_dir, report_dir)
    return code


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="/work/runs", help="Where the experiment folder is written (outside the repository).")
    parser.add_argument("--levels", type=int, default=12, help="Pruning levels (12 reaches about 7%% of the weights).")
    parser.add_argument("--replicates", type=int, default=2)
    parser.add_argument("--replicate", type=int, default=-1,
                        help="Run only this replicate (-1: all); start one process per replicate to run them side by side.")
    parser.add_argument("--data_dir", default=os.environ.get("TFDS_DATA_DIR"), help="Prepared TFDS directory holding mnist.")
    parser.add_argument("--report_dir", default=DEFAULT_REPORT_DIR)
    parser.add_argument("--report_only", action="store_true", help="Only rebuild the report from the finished runs.")
    parser.add_argument("extra_flags", nargs="*", help="More tf_lottery flags, after `--`.")
    args = parser.parse_args()
    experiment_dir = os.path.join(args.output_dir, EXPERIMENT_NAME)
    code = 0
    if not args.report_only:
        code = run_training(args, experiment_dir)
        if code:
            print(f"training stopped with exit code {code}; reporting what finished", file=sys.stderr)
    report_code = build_report(args, experiment_dir)
    return code or report_code


if __name__ == "__main__":
    sys.exit(main())
