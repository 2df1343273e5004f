"""python -m tf_lottery.report: see tf_lottery/report/__init__.py.

A folder that is not an experiment stops with one line and exit code 2; an
experiment with nothing finished still gets a report saying so.
"""

import argparse
import sys

from tf_lottery.errors import Error
from tf_lottery.report import build_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tf_lottery.report", description=__doc__)
    parser.add_argument("--experiment_dir", action="append", required=True,
                        help="An experiment folder (with config.json and results.csv); repeat to overlay several.")
    parser.add_argument("--output", default=None, help="Folder for the figures and report.md/.html "
                                                       "(default: <first experiment_dir>/report).")
    parser.add_argument("--tolerance", type=float, default=0.005,
                        help="Accuracy (absolute, 0.005 = half a point) a level may lose and still match the dense network.")
    args = parser.parse_args(argv)
    try:
        result = build_report(args.experiment_dir, args.output, args.tolerance)
    except Error as error:
        sys.stderr.write(f"tf_lottery.report: error: {error.one_line()}\n")
        return error.exit_code
    for experiment in result["experiments"]:
        missing = len(experiment.missing_runs())
        state = f"{missing} planned run(s) not finished" if missing else "complete"
        print(f"{experiment.directory}: {len(experiment.rows)} finished run(s), {state}")
    print(f"report: {result['markdown']}")
    print(f"        {result['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
