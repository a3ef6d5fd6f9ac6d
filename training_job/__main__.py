"""`python -m training_job COMMAND`: one entry point, one module per command."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from training_job.environment import overridden
from training_job.errors import CommandError, one_line

# Each command's module, one per command, in the subpackage of its job. Each exposes
# `register(subparsers)`, which adds its parser and sets `func` (taking the parsed
# arguments, returning an exit code) as a default.
COMMANDS = {
    "stage": "training_job.data.stage",
    "train": "training_job.training.launch",
    "deploy": "training_job.serving.deploy",
    "rollout": "training_job.serving.rollout",
    "models": "training_job.models.cli",
    "evaluate": "training_job.workflow.evaluate",
    "monitor": "training_job.monitor.cli",
    "review": "training_job.review.cli",
    "cost": "training_job.cost.cli",
    "image": "training_job.models.image",
    "backfill": "training_job.workflow.backfill",
}
# The variables the AWS CLI (AWS_REGION first), boto3 (AWS_DEFAULT_REGION) and
# serverless.yml read for the region; each command sets both to the one it runs in.
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


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
        importlib.import_module(COMMANDS[name]).register(commands)
    # Every command takes the region the same way, so every step lands in one region.
    for command in commands.choices.values():
        _add_region_option(command)
    return parser


def _add_region_option(parser: argparse.ArgumentParser) -> None:
    """`--region` on each command, or on each subcommand of one that has them (`monitor
    report --region R`, as a user would write it)."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if nested:
        for subcommand in nested[0].choices.values():
            _add_region_option(subcommand)
        return
    parser.add_argument(
        "--region",
        help="the AWS region to work in (default: $AWS_REGION, else boto3's: "
        "$AWS_DEFAULT_REGION or the profile's); the bucket must be in it",
    )


def resolve_region(given: str | None) -> str:
    """`--region`, else $AWS_REGION, else boto3's own resolution (AWS_DEFAULT_REGION,
    the profile's region); no silent default, as a wrong guess strands resources."""
    try:
        region = given or os.environ.get("AWS_REGION") or boto3.session.Session().region_name
    except ProfileNotFound as error:
        raise RegionError(f"{error}: fix AWS_PROFILE, or pass --region") from error
    if not region:
        raise RegionError(
            "no AWS region: pass --region or set AWS_REGION (the same one for every step, "
            "`sls deploy` included)"
        )
    return region


class RegionError(ValueError):
    """No region could be determined."""


@contextmanager
def region_environment(region: str) -> Iterator[None]:
    """Every boto3 client and subprocess the command makes uses `region`; restored after,
    so a command run in-process (the tests) does not change the caller's region."""
    with overridden(dict.fromkeys(REGION_VARIABLES, region)):
        yield


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        region = resolve_region(args.region)
    except RegionError as error:
        return _fail(args.command, str(error), 2)
    # The one place a command's error becomes a message and an exit status: 2 for a usage
    # error (as argparse's own), 1 for one at run time, each as argparse prints its own.
    try:
        with region_environment(region):
            return int(args.func(args))
    except CommandError as error:
        return _fail(args.command, str(error), error.exit_code)
    except (ClientError, BotoCoreError) as error:
        return _fail(args.command, f"AWS refused a request: {error}", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _fail(command: str, message: str, exit_code: int) -> int:
    print(f"python -m training_job {command}: error: {one_line(message)}", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
