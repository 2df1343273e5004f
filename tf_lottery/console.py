"""The `tf-lottery` console command: one entry point with subcommands, as in git or tfds.

    tf-lottery train --flagfile=flags/quickstart.cfg      # = python -m tf_lottery.main
    tf-lottery dry-run --flagfile=flags/quickstart.cfg    # = python -m tf_lottery.main --dry_run
    tf-lottery branch|report|export ...                   # = python -m tf_lottery.branch|report|export

`tf-lottery` alone or with --help lists the subcommands; `tf-lottery help <command>`
is `tf-lottery <command> --help`. A first argument that is a flag runs `train`, as
the command did before it had subcommands (`tf-lottery --flagfile=...`). An unknown
subcommand is one line and exit code 2.
"""

import sys

from tf_lottery import cli, help as help_lib
from tf_lottery.errors import USAGE


def _dispatch(command: str, args) -> int:
    prog = f"{help_lib.CONSOLE} {command}"
    if command in ("train", "dry-run"):
        from tf_lottery import main  # pylint: disable=import-outside-toplevel

        main.run([prog, *args], prog=prog, dry_run=command == "dry-run")
        return 0
    if command == "branch":
        from tf_lottery import branch  # pylint: disable=import-outside-toplevel

        return branch.main([prog, *args], prog=prog)
    if command == "report":
        from tf_lottery.report import __main__ as report  # pylint: disable=import-outside-toplevel

        return report.main(args, prog=prog)
    from tf_lottery.export import __main__ as export  # pylint: disable=import-outside-toplevel

    return export.main([prog, *args], prog=prog)


def main(argv=None) -> int:
    """Runs the subcommand `argv[1]` (sys.argv by default) with the rest; returns the exit code."""
    args = list(sys.argv if argv is None else argv)[1:]
    if not args or args[0] in help_lib.HELP_ARGS + help_lib.HELPFULL_ARGS:
        sys.stdout.write(help_lib.overview())
        return 0
    command, rest = args[0], args[1:]
    if command == "help" and rest:  # `tf-lottery help export` = `tf-lottery export --help`
        command, rest = rest[0], ["--help"]
    elif command == "help":
        sys.stdout.write(help_lib.overview())
        return 0
    if command.startswith("-"):  # `tf-lottery --flagfile=...`: the command before it had subcommands
        command, rest = "train", args
    if command not in help_lib.COMMANDS:
        cli.fail(help_lib.CONSOLE, USAGE, f"unknown command {command!r}; commands: {', '.join(help_lib.COMMANDS)} "
                 f"(see {help_lib.CONSOLE} --help)")
    return _dispatch(command, rest)


def run():
    """Console-script entry point (`tf-lottery`)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
