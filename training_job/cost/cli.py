"""`python -m training_job cost`: what a photo costs on AWS, per service, per million photos.

Reads the deployed stack: the state machine's last executions (a Standard workflow's
from their histories, an Express one's from its log group: state transitions, Lambda
invocations and their measured durations times each function's memory, DynamoDB writes,
custom events, log records; Express: each execution and its billed GB-seconds), the
endpoint's production variants with their autoscaling (instances from the target-tracking
value, invocations per instance per minute, at a steady rate), data capture's sampling,
and the stack's alarms and custom metrics. Prices come from one dated file
(training_job/cost/prices-us-east-1.json: its date, region and each price's source page), which
the report names. A steady rate is assumed: a peaky month needs more endpoint instances at
its peaks than the average says.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import boto3

from training_job.arguments import bounded, positive_number
from training_job.cost.model import (
    DAYS_PER_MONTH,
    DEFAULT_PRICES,
    Endpoint,
    Line,
    Prices,
    PricesError,
    Usage,
    cost_per_million,
)
from training_job.cost.usage import (
    alarm_count,
    custom_metric_count,
    endpoint_usage,
    workflow_usage,
)
from training_job.errors import UsageError
from training_job.serving.autoscaling import DEFAULT_TARGET_INVOCATIONS_PER_MINUTE
from training_job.serving.deployment import DEFAULT_ENDPOINT_NAME
from training_job.workflow.evaluate import resolve_state_machine

DEFAULT_STACK = "scones-unlimited-dev"
WORKFLOW_SUFFIX = "-image-workflow"  # serverless.yml's state machine name after the stack's
DEFAULT_PHOTOS_PER_MONTH = 1_000_000
S3_GETS_PER_PHOTO = 1  # serialize reads the upload
S3_UPLOAD_PUTS_PER_PHOTO = 1  # the upload itself


def read_usage(args: argparse.Namespace, photos_per_month: float) -> tuple[Usage, int]:
    """The stack's usage per photo, and how many executions it was averaged over."""
    sfn = boto3.client("stepfunctions")
    machine = resolve_state_machine(sfn, args.state_machine or f"{args.stack}{WORKFLOW_SUFFIX}")
    workflow = workflow_usage(
        sfn,
        boto3.client("lambda"),
        boto3.client("dynamodb"),
        machine,
        args.executions,
        boto3.client("logs"),
    )
    variants: tuple[Endpoint, ...] = ()
    capture_share = 0.0
    if not args.skip_endpoint:
        endpoint = endpoint_usage(
            boto3.client("sagemaker"),
            boto3.client("application-autoscaling"),
            args.endpoint,
            DEFAULT_TARGET_INVOCATIONS_PER_MINUTE,
        )
        variants, capture_share = tuple(endpoint.variants), endpoint.capture_share
    cloudwatch = boto3.client("cloudwatch")
    usage = Usage(
        photos_per_month=photos_per_month,
        state_transitions=workflow.state_transitions,
        lambda_requests=workflow.lambda_requests,
        lambda_gb_seconds=workflow.lambda_gb_seconds,
        dynamodb_write_units=workflow.dynamodb_write_units,
        custom_events=workflow.custom_events,
        s3_gets=S3_GETS_PER_PHOTO,
        s3_puts=S3_UPLOAD_PUTS_PER_PHOTO + capture_share,
        log_bytes=workflow.log_bytes,
        endpoint=variants,
        alarms=alarm_count(boto3.client("cloudformation"), args.stack),
        custom_metrics=custom_metric_count(cloudwatch),
        express_gb_seconds=workflow.express_gb_seconds,
    )
    return usage, workflow.executions


def format_table(lines: list[Line], prices: Prices, photos_per_month: float, region: str) -> str:
    header = f"{'service':<28}{'per month':>14}{'per 1M photos':>15}  counted"
    rows = [
        f"{line.service:<28}{line.monthly:>14,.2f}{line.per_million:>15,.2f}  {line.what}"
        for line in lines
    ]
    total = sum(line.monthly for line in lines)
    per_million = sum(line.per_million for line in lines)
    notes = [
        f"{photos_per_month:,.0f} photos a month ({photos_per_month / DAYS_PER_MONTH:,.0f} a "
        f"day); USD, {prices.region} list prices as of {prices.as_of}",
    ]
    if region != prices.region:
        notes.append(f"warning: the stack is in {region}, the prices are {prices.region}'s")
    return "\n".join([*notes, header, *rows, f"{'total':<28}{total:>14,.2f}{per_million:>15,.2f}"])


def run(args: argparse.Namespace) -> int:
    try:
        prices = Prices.read(args.prices)
    except PricesError as error:
        raise UsageError(str(error)) from error
    photos = (
        args.photos_per_day * DAYS_PER_MONTH
        if args.photos_per_day is not None
        else args.photos_per_month
    )
    usage, executions = read_usage(args, photos)
    try:
        lines = cost_per_million(usage, prices)
    except PricesError as error:
        raise UsageError(str(error)) from error
    region = boto3.session.Session().region_name or ""
    if args.json:
        report = {
            "prices_as_of": prices.as_of,
            "prices_region": prices.region,
            "photos_per_month": photos,
            "executions_sampled": executions,
            "lines": [asdict(line) for line in lines],
            "total_per_million": sum(line.per_million for line in lines),
        }
        print(json.dumps(report, indent=2))
    else:
        print(format_table(lines, prices, photos, region))
        print(f"(averaged over the last {executions} finished executions)")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cost",
        help="what a photo costs on AWS: per service, per million photos, at a volume",
        description=__doc__,
        epilog="exit status: 0 the table is printed; 1 AWS refused a call; 2 bad arguments, "
        "a prices file without a needed price, no such state machine or endpoint, or no "
        "finished executions to count.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    volume = parser.add_mutually_exclusive_group()
    volume.add_argument(
        "--photos-per-month",
        type=positive_number,
        default=DEFAULT_PHOTOS_PER_MONTH,
        metavar="N",
        help="the volume to price (default: %(default)s)",
    )
    volume.add_argument(
        "--photos-per-day",
        type=positive_number,
        metavar="N",
        help="the volume to price, a day (a month is 730/24 days, as AWS prices it)",
    )
    parser.add_argument(
        "--stack",
        default=DEFAULT_STACK,
        help="the CloudFormation stack `sls deploy` made (service-stage): its alarms are "
        "counted, and its state machine is STACK-image-workflow (default: %(default)s)",
    )
    parser.add_argument(
        "--state-machine", metavar="NAME_OR_ARN", help="the workflow, if not the stack's"
    )
    parser.add_argument(
        "--executions",
        type=bounded(int, "a number of executions from 1 to 1000", 1, 1000),
        default=20,
        metavar="K",
        help="how many of the newest finished executions to count (default: %(default)s)",
    )
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT_NAME,
        metavar="NAME",
        help="the SageMaker endpoint the workflow calls (default: %(default)s)",
    )
    parser.add_argument(
        "--skip-endpoint",
        action="store_true",
        help="price the workflow without the endpoint (e.g. one deployed elsewhere)",
    )
    parser.add_argument(
        "--prices",
        type=Path,
        default=DEFAULT_PRICES,
        metavar="FILE",
        help=f"the dated price list (default: training_job/{DEFAULT_PRICES.name})",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(func=run)
