"""`python -m training_job backfill`: score every photo under an S3 prefix with the deployed
model (or `--model-version N`), record each one's decision as the live workflow does, and
write a results file: one JSON line per photo, a decision or a named failure.

It starts the stage's backfill state machine (statemachine/backfill.asl.yml: a Distributed
Map over the prefix, batches of photos scored by handlers/backfill.py), shows its progress
(DescribeMapRun's item counts), and turns the map run's exported results
(backfills/<map run id>/ in the data bucket) into the results file, written beside them
(backfills/<execution name>/results.jsonl) and locally (--results).

A photo that has a decision for the same object version is left as it is (outcome
`already_decided`), unless --redecide: so a backfill stopped midway (Ctrl-C stops its
execution) and started again finishes without deciding a photo twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from tqdm import tqdm

from contract import backfill as contract
from contract import shown
from contract.decisions import variant_for_version
from contract.s3 import S3UriError, parse_s3_prefix_uri
from training_job.arguments import positive_int
from training_job.errors import CommandError, UsageError
from training_job.workflow.evaluate import EvaluationError, resolve_state_machine

STATE_MACHINE_SUFFIX = "-backfill"  # serverless.yml names it SERVICE-STAGE-backfill
POLL_SECONDS = 2.0
SUMMARY_ORDER = contract.OUTCOMES


class BackfillError(CommandError):
    """The backfill could not run or its results could not be read."""


def find_state_machine(sfn: Any, given: str | None) -> str:
    """--state-machine, else the one state machine of this account and region whose name
    ends in -backfill (a UsageError when there are none or several)."""
    if given:
        try:
            return resolve_state_machine(sfn, given)
        except EvaluationError as error:
            raise UsageError(str(error)) from None
    found = [
        machine["stateMachineArn"]
        for page in sfn.get_paginator("list_state_machines").paginate()
        for machine in page["stateMachines"]
        if machine["name"].endswith(STATE_MACHINE_SUFFIX)
    ]
    if len(found) != 1:
        raise UsageError(
            f"{'no' if not found else len(found)} backfill state machines (names ending in "
            f"{STATE_MACHINE_SUFFIX}) in this region: name one with --state-machine"
        )
    return str(found[0])


def deployed_settings(sfn: Any, machine_arn: str) -> tuple[str, str]:
    """The data bucket the state machine lists and its batch scorer's function ARN."""
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=machine_arn)["definition"])
    try:
        state = next(iter(definition["States"].values()))
        bucket = state["ItemReader"]["Parameters"]["Bucket"]
        task = next(iter(state["ItemProcessor"]["States"].values()))
        return str(bucket), str(task["Parameters"]["FunctionName"])
    except (KeyError, StopIteration, TypeError) as error:
        raise UsageError(f"{shown(machine_arn)} is not a backfill state machine") from error


def target_variant(function_arn: str, version: int | None) -> str:
    """The variant serving `version` on the scorer's endpoint ("" for the endpoint's own
    routing); UsageError when the endpoint serves no such version."""
    if version is None:
        return ""
    config = boto3.client("lambda").get_function_configuration(FunctionName=function_arn)
    endpoint = config.get("Environment", {}).get("Variables", {}).get("ENDPOINT_NAME", "")
    described = boto3.client("sagemaker").describe_endpoint(EndpointName=endpoint)
    variants = [v["VariantName"] for v in described.get("ProductionVariants", [])]
    variants += [v["VariantName"] for v in described.get("ShadowProductionVariants", [])]
    wanted = variant_for_version(version)
    if wanted not in variants:
        raise UsageError(
            f"endpoint {endpoint} serves no model version {version} (its variants: "
            f"{', '.join(variants) or 'none'}); deploy it first"
        )
    return wanted


def wait(sfn: Any, execution_arn: str, progress: bool) -> dict[str, Any]:
    """The execution once it ended, with a bar of the map run's items done."""
    with tqdm(desc="photos", unit="photo", disable=not progress) as bar:
        while True:
            described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
            if runs:
                counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"])["itemCounts"]
                bar.total = counts["total"] or None
                bar.n = counts["succeeded"] + counts["failed"]
                bar.refresh()
            if described["status"] != "RUNNING":
                return described
            time.sleep(POLL_SECONDS)


def results(s3: Any, sfn: Any, bucket: str, execution_arn: str) -> list[dict[str, Any]]:
    """One row per photo from the map run's exported results: each batch's outcomes, the
    photos of a failed batch named by its error, those never run as NotProcessed."""
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    if not runs:
        raise BackfillError("the backfill's map run never started (its execution failed first)")
    run_id = runs[0]["mapRunArn"].rsplit(":", 1)[-1]
    manifest_key = f"{contract.RESULTS_PREFIX}{run_id}/manifest.json"
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    except ClientError as error:
        raise BackfillError(
            f"no exported results at s3://{bucket}/{manifest_key}: {error}"
        ) from None
    rows: list[dict[str, Any]] = []
    for status, files in manifest["ResultFiles"].items():
        for file in files:
            for child in json.loads(s3.get_object(Bucket=bucket, Key=file["Key"])["Body"].read()):
                rows += _rows(status, child)
    return rows


def _rows(status: str, child: dict[str, Any]) -> list[dict[str, Any]]:
    if status == "SUCCEEDED":
        photos: list[dict[str, Any]] = json.loads(child["Output"])["photos"]
        return photos
    error = child.get("Error") or contract.NOT_PROCESSED
    cause = child.get("Cause") or f"the batch's child execution is {status}"
    return [
        {
            "key": item["Key"],
            "etag": item["Etag"].strip('"'),
            "outcome": contract.OUTCOME_FAILED,
            "error": error,
            "cause": cause,
        }
        for item in json.loads(child["Input"])["Items"]
    ]


def backfill(
    images: str,
    model_version: int | None,
    redecide: bool,
    state_machine: str | None,
    results_path: Path | None,
    progress: bool,
) -> dict[str, Any]:
    try:
        bucket, prefix = parse_s3_prefix_uri(images)
    except S3UriError as error:
        raise UsageError(str(error)) from None
    if not prefix:
        raise UsageError(f"name a prefix to score, not the whole bucket: {shown(images)}")
    sfn, s3 = boto3.client("stepfunctions"), boto3.client("s3")
    machine_arn = find_state_machine(sfn, state_machine)
    data_bucket, function_arn = deployed_settings(sfn, machine_arn)
    if bucket != data_bucket:
        raise UsageError(f"the backfill scores photos in s3://{data_bucket}/ only, not {bucket}")
    variant = target_variant(function_arn, model_version)
    name = f"backfill-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    execution_input = {"prefix": prefix, "target_variant": variant, "redecide": redecide}
    execution_arn = sfn.start_execution(
        stateMachineArn=machine_arn, name=name, input=json.dumps(execution_input)
    )["executionArn"]
    print(f"backfill {name}: scoring s3://{bucket}/{prefix}", file=sys.stderr)
    try:
        described = wait(sfn, execution_arn, progress)
    except KeyboardInterrupt:
        sfn.stop_execution(executionArn=execution_arn, cause="stopped from the command line")
        print(
            f"backfill {name} stopped; run the same command again to finish it (photos "
            "decided already are left as they are)",
            file=sys.stderr,
        )
        raise
    rows = results(s3, sfn, bucket, execution_arn)
    body = "".join(json.dumps(row) + "\n" for row in rows)
    results_key = f"{contract.RESULTS_PREFIX}{name}/{contract.RESULTS_FILE}"
    s3.put_object(Bucket=bucket, Key=results_key, Body=body.encode())
    local = results_path or Path(f"{name}.jsonl")
    local.write_text(body)
    counts = Counter(row["outcome"] for row in rows)
    return {
        "backfill": name,
        "status": described["status"],
        "error": described.get("error"),
        "photos": len(rows),
        "outcomes": {outcome: counts.get(outcome, 0) for outcome in SUMMARY_ORDER},
        "failed_by_error": dict(
            Counter(row.get("error", "") for row in rows if row["outcome"] == "failed")
        ),
        "results": f"s3://{bucket}/{results_key}",
        "local_results": str(local),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"backfill {report['backfill']}: {report['status']}, {report['photos']} photos"]
    lines += [f"  {outcome}: {count}" for outcome, count in report["outcomes"].items()]
    lines += [f"    {error}: {count}" for error, count in report["failed_by_error"].items()]
    lines += [f"results: {report['results']} (and {report['local_results']})"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = backfill(
        args.images,
        args.model_version,
        args.redecide,
        args.state_machine,
        args.results,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(report) if args.json else format_report(report))
    if report["outcomes"][contract.OUTCOME_FAILED]:
        raise BackfillError(
            f"{report['outcomes'][contract.OUTCOME_FAILED]} photos failed (named in the "
            "results file); run the same command again to retry them"
        )
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="score every photo under an S3 prefix and record the decisions (Distributed Map)",
        description=__doc__,
        epilog="exit status: 0 every photo decided (now or before); 1 some photos failed "
        "(each named in the results file) or AWS refused a call; 2 bad arguments, no "
        "backfill state machine, or a model version the endpoint does not serve; 130 "
        "stopped with Ctrl-C (the execution is stopped too).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--images",
        required=True,
        metavar="s3://BUCKET/PREFIX/",
        help="the photos to score: every object under this prefix of the data bucket "
        "(test/, train/, incoming/ or archive/)",
    )
    parser.add_argument(
        "--model-version",
        type=positive_int,
        default=None,
        metavar="N",
        help="score with this registered model version (its variant on the endpoint, "
        "`models list` shows them); default: the endpoint's own routing, the deployed version",
    )
    parser.add_argument(
        "--redecide",
        action="store_true",
        help="replace the model's decisions of photos decided before (a person's answer "
        "stays); default: leave them as they are",
    )
    parser.add_argument(
        "--state-machine",
        metavar="NAME_OR_ARN",
        help="the backfill state machine (default: the one named *-backfill in this region)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        metavar="PATH",
        help="where to write the local copy of the results file (default: ./NAME.jsonl)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(func=run)
