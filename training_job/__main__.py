"""`python -m training_job COMMAND`: one entry point, one module per command."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# Each command module exposes `register(subparsers)`, which adds its parser and sets
# `func` (taking the parsed arguments, returning an exit code) as a default.
COMMANDS = ("stage", "train", "deploy", "evaluate", "monitor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training_job",
        description="Stage CIFAR-100 data, train the bicycle/motorcycle classifier, deploy "
        "it, evaluate the workflow and monitor the endpoint, on AWS or in local mode "
        "(the same commands; `source .local/aws.env` points them at the local AWS).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if importlib.util.find_spec(f"training_job.{name}") is None:  # TEMP while helpers build
            continue
        importlib.import_module(f"training_job.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
