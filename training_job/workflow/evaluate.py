"""`python -m training_job evaluate`: run the deployed workflow once per test image.

Starts one execution of the state machine per image listed in the test `.lst` (input: the
workflow event `{"image_data": "", "s3_bucket", "s3_key", "inferences": []}`), at most
`--concurrency` at a time, waits for each, and reports
how many succeeded and failed, the failures by error name, the accuracy of the predictions
that passed the confidence gate, and the share the gate stopped. It calls only Step
Functions and S3, so it runs the same against AWS and against the local AWS.

A STANDARD workflow's executions are started and followed with DescribeExecution (with
back-off); an EXPRESS workflow keeps no execution history to describe, so each of its
executions is run with StartSyncExecution, which answers with the execution's end.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from contract import shown
from contract.aws_errors import error_code
from contract.manifest import MAX_LST_BYTES, LstEntry, ManifestError, parse_lst
from contract.s3 import S3UriError, parse_s3_object_uri, parse_s3_prefix_uri
from training_job.arguments import bounded, positive_int, positive_number
from training_job.data.bucket import BucketError, require_region
from training_job.errors import CommandError, UsageError

GATE_ERROR = "THRESHOLD_CONFIDENCE_NOT_MET"
MAX_CONCURRENCY = 256
FIRST_POLL_SECONDS = 0.2
MAX_POLL_SECONDS = 5.0


class EvaluationError(UsageError):
    """The evaluation cannot run: a bad argument, a missing state machine or manifest
    (exit status 2, as before: each names something the command line got wrong)."""


@dataclass(frozen=True)
class Outcome:
    """How one execution ended: its status, its error name, and its output document."""

    key: str
    label: int
    status: str
    error: str | None = None
    output: str | None = None


def read_labels(s3: Any, uri: str) -> list[LstEntry]:
    bucket, key = parse_s3_object_uri(uri)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
        if int(response.get("ContentLength", 0)) > MAX_LST_BYTES:
            raise EvaluationError(
                f"{shown(uri)} is over {MAX_LST_BYTES} bytes: not a .lst manifest"
            )
        text = response["Body"].read(MAX_LST_BYTES + 1).decode("utf-8")
        entries = parse_lst(text)
    except ClientError as error:
        raise EvaluationError(f"cannot read {shown(uri)}: {error}") from error
    except (UnicodeDecodeError, ManifestError) as error:
        raise EvaluationError(f"{shown(uri)} is not a .lst manifest: {error}") from error
    if not entries:
        raise EvaluationError(f"{shown(uri)} lists no images")
    return entries


def resolve_state_machine(sfn: Any, name_or_arn: str) -> str:
    if name_or_arn.startswith("arn:"):
        # Checked before any execution starts: otherwise each one fails on its own with
        # StateMachineDoesNotExist and the run reports them as the workflow's failures.
        try:
            sfn.describe_state_machine(stateMachineArn=name_or_arn)
        except ClientError as error:
            code = error_code(error)
            if code in ("StateMachineDoesNotExist", "InvalidArn"):
                raise EvaluationError(
                    f"no state machine {shown(name_or_arn)} in this account and region ({code})"
                ) from error
            raise
        return name_or_arn
    for page in sfn.get_paginator("list_state_machines").paginate():
        for machine in page["stateMachines"]:
            if machine["name"] == name_or_arn:
                return str(machine["stateMachineArn"])
    raise EvaluationError(f"no state machine named {shown(name_or_arn)} in this account and region")


def workflow_body(output: str | None) -> dict[str, Any] | None:
    """The workflow event in an execution's output: `{"statusCode", "body": {...}}` or flat."""
    try:
        document = json.loads(output or "")
    except ValueError:
        return None
    if isinstance(document, dict) and "body" in document:
        document = document["body"]
        if isinstance(document, str):  # an API-Gateway-style body holds JSON text
            try:
                document = json.loads(document)
            except ValueError:
                return None
    return document if isinstance(document, dict) else None


def predicted_label(output: str | None) -> int | None:
    body = workflow_body(output)
    inferences = body.get("inferences") if body else None
    if not isinstance(inferences, list) or not inferences:
        return None
    if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in inferences):
        return None
    return max(range(len(inferences)), key=lambda index: inferences[index])


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """The report: counts, failures by error name, gate accuracy and the stopped share."""
    succeeded = [o for o in outcomes if o.status == "SUCCEEDED"]
    failed = [o for o in outcomes if o.status != "SUCCEEDED"]
    by_error = Counter(o.error or o.status for o in failed)
    predictions = [(predicted_label(o.output), o.label) for o in succeeded]
    judged = [(p, label) for p, label in predictions if p is not None]
    correct = sum(1 for p, label in judged if p == label)
    return {
        "executions": len(outcomes),
        "succeeded": len(succeeded),
        "failed": len(failed),
        "failed_by_error": dict(sorted(by_error.items())),
        "gate_accuracy": correct / len(judged) if judged else None,
        "stopped_share": by_error.get(GATE_ERROR, 0) / len(outcomes) if outcomes else None,
    }


def run_one_synchronously(
    sfn: Any, machine_arn: str, name: str, bucket: str, key: str, label: int
) -> Outcome:
    """An Express execution, run to its end by StartSyncExecution (the client's read
    timeout is the wait: see `evaluate`)."""
    event = {"image_data": "", "s3_bucket": bucket, "s3_key": key, "inferences": []}
    try:
        ended = sfn.start_sync_execution(
            stateMachineArn=machine_arn, name=name, input=json.dumps(event)
        )
    except (ClientError, BotoCoreError) as error:
        code = error_code(error) if isinstance(error, ClientError) else "Client"
        return Outcome(key, label, "NOT_STARTED", f"StartSync.{code}")
    return Outcome(key, label, ended["status"], ended.get("error"), ended.get("output"))


def run_one(
    sfn: Any, machine_arn: str, name: str, bucket: str, key: str, label: int, timeout: float
) -> Outcome:
    event = {"image_data": "", "s3_bucket": bucket, "s3_key": key, "inferences": []}
    try:
        arn = sfn.start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(event))[
            "executionArn"
        ]
        deadline = time.monotonic() + timeout
        pause = FIRST_POLL_SECONDS
        while True:
            described = sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                return Outcome(
                    key,
                    label,
                    described["status"],
                    described.get("error"),
                    described.get("output"),
                )
            if time.monotonic() > deadline:
                return Outcome(key, label, "EVALUATION_TIMEOUT", "EvaluationTimeout")
            time.sleep(pause)
            pause = min(pause * 1.5, MAX_POLL_SECONDS)
    except (ClientError, BotoCoreError) as error:
        code = error_code(error) if isinstance(error, ClientError) else "Client"
        return Outcome(key, label, "NOT_STARTED", f"StartOrDescribe.{code}")


def evaluate(
    state_machine: str,
    images: str,
    labels: str,
    concurrency: int,
    timeout: float,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise EvaluationError(f"--concurrency must be in 1..{MAX_CONCURRENCY}, got {concurrency}")
    if not (math.isfinite(timeout) and timeout > 0):  # NaN compares false with everything
        raise EvaluationError(f"--timeout must be positive and finite seconds, got {timeout}")
    bucket, prefix = parse_s3_prefix_uri(images)
    s3 = boto3.client("s3")
    # The region rule `--region` states: the images' and labels' buckets are in it.
    for named in sorted({bucket, parse_s3_object_uri(labels)[0]}):
        require_region(s3, named)
    sfn = boto3.client("stepfunctions")
    entries = read_labels(s3, labels)[: limit if limit is not None and limit > 0 else None]
    machine_arn = resolve_state_machine(sfn, state_machine)
    express = sfn.describe_state_machine(stateMachineArn=machine_arn).get("type") == "EXPRESS"
    if express:
        # A synchronous start waits in its response: up to --timeout, and never retried
        # (a retried start would run the photo twice).
        sfn = boto3.client(
            "stepfunctions",
            config=Config(read_timeout=timeout, retries={"total_max_attempts": 1}),
        )
    run_id = uuid.uuid4().hex[:12]  # execution names are unique per state machine for 90 days
    outcomes: list[Outcome] = []
    with (
        ThreadPoolExecutor(max_workers=concurrency) as pool,
        tqdm(total=len(entries), desc="executions", unit="image", disable=not progress) as bar,
    ):
        futures = [
            pool.submit(run_one_synchronously, sfn, machine_arn, name, bucket, key, entry.label)
            if express
            else pool.submit(run_one, sfn, machine_arn, name, bucket, key, entry.label, timeout)
            for index, entry in enumerate(entries)
            for name, key in [(f"evaluate-{run_id}-{index:05d}", prefix + entry.filename)]
        ]
        for future in as_completed(futures):
            outcomes.append(future.result())
            bar.update(1)
    return summarize(outcomes)


def format_report(report: dict[str, Any]) -> str:
    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    lines = [
        f"executions: {report['executions']}",
        f"succeeded:  {report['succeeded']}",
        f"failed:     {report['failed']}",
    ]
    lines += [f"  {name}: {count}" for name, count in report["failed_by_error"].items()]
    lines.append(
        f"accuracy of the predictions that passed the gate: {share(report['gate_accuracy'])}"
    )
    lines.append(f"share stopped by the gate ({GATE_ERROR}): {share(report['stopped_share'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        report = evaluate(
            args.state_machine,
            args.images,
            args.labels,
            args.concurrency,
            args.timeout,
            args.limit,
            progress=sys.stderr.isatty() or not args.json,  # the bar goes to stderr
        )
    except S3UriError as error:  # EvaluationError and AWS's go to __main__ as they are
        raise UsageError(str(error)) from error
    except BucketError as error:
        raise CommandError(str(error)) from error
    print(json.dumps(report) if args.json else format_report(report))
    not_started = sum(
        count for name, count in report["failed_by_error"].items() if name.startswith("Start")
    )
    if not_started:
        raise CommandError(f"{not_started} executions could not be started or followed")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="run the deployed workflow on every test image and report the gate's effect",
        description=__doc__,
        epilog="exit status: 0 the report is printed (doubtful images stopped by the gate "
        "are outcomes, not errors); 1 AWS refused a call, or executions could not be started "
        "or followed; 2 bad arguments, or no such state machine or manifest.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-machine",
        required=True,
        metavar="NAME_OR_ARN",
        help="the deployed workflow's state machine, by name or ARN",
    )
    parser.add_argument(
        "--images",
        required=True,
        metavar="s3://BUCKET/PREFIX/",
        help="where the images listed in --labels are (e.g. s3://BUCKET/test/)",
    )
    parser.add_argument(
        "--labels",
        required=True,
        metavar="s3://BUCKET/KEY",
        help="the .lst manifest (row<TAB>label<TAB>filename) giving each image's true label",
    )
    parser.add_argument(
        "--concurrency",
        type=bounded(
            int, f"a number of executions from 1 to {MAX_CONCURRENCY}", 1, MAX_CONCURRENCY
        ),
        default=8,
        help="executions in flight at once (default: 8)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_number,
        default=300.0,
        metavar="SECONDS",
        help="give up waiting for one execution after this long (default: 300)",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="evaluate only the first N images of the manifest",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object (executions, succeeded, failed, "
        "failed_by_error, gate_accuracy, stopped_share) instead of text",
    )
    parser.set_defaults(func=run)
