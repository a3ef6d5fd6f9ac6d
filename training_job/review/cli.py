"""The `review` command's options, and the server it runs until Ctrl-C."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from typing import Any

import boto3
from botocore.exceptions import ClientError

from contract import shown
from contract.aws_errors import error_code
from contract.decisions import TABLE_ENVIRONMENT_VARIABLE
from training_job.arguments import bounded
from training_job.data.bucket import BucketError, require_region
from training_job.errors import CommandError, UsageError
from training_job.review.server import ReviewServer
from training_job.review.store import ReviewStore

DEFAULT_PORT = 8321
# What a reviewer's name may hold: an IAM user or role session name's characters.
_REVIEWER = re.compile(r"[A-Za-z0-9_.@+=,-]{1,64}")


_port = bounded(int, "a port from 0 to 65535 (0: any free one)", 0, 65535)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "review",
        help="serve the review page: a person answers the photos the model doubted",
        description="Serve a web page on 127.0.0.1 where a person answers the photos waiting "
        "in the review queue (bicycle, motorcycle, neither; keys B, M, N; S skips, U undoes "
        "the last answer). Each answer updates the photo's decision (source: person), emits "
        "the decision event again, and is kept for training in "
        "s3://BUCKET/reviewed/reviewed.lst. Several reviewers may work at once: an answer "
        "never overwrites another's. Acts with your AWS credentials "
        "(docs/iam/reviewer-policy.json is the least they need).",
    )
    parser.add_argument(
        "--table",
        default=os.environ.get(TABLE_ENVIRONMENT_VARIABLE),
        help=f"the decisions table the stack created (default: ${TABLE_ENVIRONMENT_VARIABLE})",
    )
    parser.add_argument(
        "--bucket", required=True, help="the workflow's bucket: the photos and reviewed/"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the loopback address to listen on (default: 127.0.0.1; never another interface)",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}; 0 picks one"
    )
    parser.add_argument(
        "--reviewer",
        help="the name your answers are recorded under (default: your AWS identity's name)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.table:
        raise UsageError(f"no decisions table: pass --table or set {TABLE_ENVIRONMENT_VARIABLE}")
    if not is_loopback(args.host):
        raise UsageError(
            f"--host {shown(args.host)} is not a loopback address: the page is "
            "for this machine only"
        )
    reviewer = args.reviewer or caller_name()
    if not _REVIEWER.fullmatch(reviewer):
        raise UsageError(
            f"--reviewer {shown(reviewer)}: 1-64 letters, digits or _.@+=,- (pass --reviewer)"
        )
    try:  # the region rule `--region` states, before the table is looked for there
        require_region(boto3.client("s3"), args.bucket)
    except BucketError as error:
        raise CommandError(str(error)) from error
    store = ReviewStore(
        boto3.client("dynamodb"),
        boto3.client("s3"),
        boto3.client("events"),
        args.table,
        args.bucket,
    )
    try:
        pending = store.count_pending()  # the table and its queue index, checked up front
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            raise CommandError(f"no decisions table {shown(args.table)} in this region") from error
        raise
    try:
        server = ReviewServer((args.host, args.port), store, reviewer)
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error}") from error
    print(
        f"{pending} photos wait for review. Review page: {server.url} "
        f"(reviewing as {reviewer}; Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def caller_name() -> str:
    """The last part of the caller's ARN: a user's name, or an assumed role's session."""
    arn = boto3.client("sts").get_caller_identity()["Arn"]
    return str(arn).rsplit("/", 1)[-1]
