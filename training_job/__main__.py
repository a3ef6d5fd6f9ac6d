"""`python -m training_job COMMAND`: one entry point, one module per command."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each command module exposes `register(subparsers)`, which adds its parser and sets
# `func` (taking the parsed arguments, returning an exit code) as a default.
COMMANDS = ("stage", "train", "deploy", "evaluate", "monitor")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with `only`, just that command's module is imported (some pull in
    torch or scipy, which would cost every other command seconds of start-up)."""
    parser = argparse.ArgumentParser(
        prog="python -m training_job",
        description="Stage CIFAR-100 data, train the bicycle/motorcycle classifier, deploy "
        "it, evaluate the workflow and monitor the endpoint, on AWS or in local mode "
        "(the same commands; `source .local/aws.env` points them at the local AWS).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"training_job.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
