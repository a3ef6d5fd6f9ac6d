"""The demo's review step: a scripted reviewer answers the review queue, as a person would.

After the workflow has run on every test image, the photos it queued wait in the
decisions table. This step runs the real `python -m training_job review` command (the
page's server) and answers every queued photo through the same HTTP API the page uses
(training_job.review.scripted), with the photos' true labels from `test.lst` standing in
for a person's eye. An answer that contradicts a confident model waits for a second
person (training_job/review/agreement.py), so a second scripted reviewer then answers
what the first left for someone else. It returns what the summary shows: the queue
before and after, the answers, and the decisions by status and source.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

from contract.decisions import CLASSES, image_id
from contract.manifest import parse_lst
from training_job import local_mode
from training_job.review.scripted import ScriptedReview, review_queue

REPO_ROOT = Path(__file__).resolve().parents[2]
REVIEWER = "demo-reviewer"
SECOND_REVIEWER = "demo-second-reviewer"  # for the answers held for a second opinion
STOP_TIMEOUT_SECONDS = 30.0


def decisions_table(cloudformation: Any, stack: str) -> str | None:
    """The name of the decisions table stack `stack` created (its only table, or the one
    whose logical id names decisions), or None when it has none."""
    resources = cloudformation.describe_stack_resources(StackName=stack)["StackResources"]
    # moto describes some of the stack's resources (those it does not model) without
    # a ResourceType.
    tables = [r for r in resources if r.get("ResourceType") == "AWS::DynamoDB::Table"]
    named = [r for r in tables if "decision" in r.get("LogicalResourceId", "").lower()]
    chosen = named or tables
    return str(chosen[0]["PhysicalResourceId"]) if len(chosen) == 1 else None


def true_answers(s3: Any, bucket: str) -> dict[str, str]:
    """The test images' true classes by s3:// id, from the staged `test.lst`."""
    text = s3.get_object(Bucket=bucket, Key="test.lst")["Body"].read().decode("utf-8")
    return {
        image_id(bucket, f"test/{entry.filename}"): CLASSES[entry.label]
        for entry in parse_lst(text)
    }


def decisions_by_outcome(dynamodb: Any, table: str) -> dict[str, int]:
    """How many decisions the table holds per status/source ("reviewed/person": 12)."""
    counts: Counter[str] = Counter()
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=table, ProjectionExpression="#status, #source",
        ExpressionAttributeNames={"#status": "status", "#source": "source"},
    ):  # fmt: skip
        for item in page["Items"]:
            status = item.get("status", {}).get("S", "?")
            counts[f"{status}/{item.get('source', {}).get('S', '?')}"] += 1
    return dict(sorted(counts.items()))


def _sigint_stops() -> None:
    """`preexec_fn` of the review server: SIGINT at its default action, so the stop below
    is a Ctrl-C (KeyboardInterrupt, a clean exit 0) even when the demo itself runs with
    SIGINT ignored (started with a shell's `&`, or by a CI runner), which a child would
    inherit: the stop then did nothing, and the server was killed after the timeout."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def scripted_review(bucket: str, table: str) -> dict[str, Any]:
    """Serve the review page with the real command and answer its queue with the truth,
    then as a second reviewer, the photos held for a second opinion."""
    truth = true_answers(boto3.client("s3"), bucket)
    result, stopped = review_as(REVIEWER, bucket, table, truth)
    exit_statuses = [stopped]
    second = None
    if result.pending_after:
        second, stopped = review_as(SECOND_REVIEWER, bucket, table, truth)
        exit_statuses.append(stopped)
    return {
        "queue_before": result.pending_before,
        "queue_after": (second or result).pending_after,
        "answers": dict(sorted(result.answers.items())),
        "second_opinions": sum(second.answers.values()) if second else 0,
        "conflicts": result.conflicts + (second.conflicts if second else 0),
        "unknown": (second or result).unknown,
        "decisions": decisions_by_outcome(boto3.client("dynamodb"), table),
        # Each review server's exit status: 0 when it stopped as Ctrl-C stops it.
        "server_exit_statuses": exit_statuses,
    }


def review_as(
    reviewer: str, bucket: str, table: str, truth: dict[str, str]
) -> tuple[ScriptedReview, int]:
    """Run `training_job review` as `reviewer` and answer the queue through its page; what
    was answered, and the server's exit status once stopped."""
    port = local_mode.backend("local-aws").free_port()
    command = [
        sys.executable, "-m", "training_job", "review", "--table", table,
        "--bucket", bucket, "--port", str(port), "--reviewer", reviewer,
    ]  # fmt: skip
    print(f"    $ {' '.join(command[1:])}", flush=True)
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=_sigint_stops
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()  # printed once it listens
        if not banner:
            raise RuntimeError(f"`training_job review` exited with status {server.wait()}")
        print(f"    {banner.strip()}", flush=True)
        result = review_queue(f"http://127.0.0.1:{port}/", truth)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return result, server.returncode


def review_step(bucket: str, stack: str) -> dict[str, Any] | None:
    """The demo's step: None when the stack declares no decisions table."""
    table = decisions_table(boto3.client("cloudformation"), stack)
    if table is None:
        print(f"    the stack {stack} has no decisions table: nothing to review")
        return None
    return scripted_review(bucket, table)


def summary_lines(review: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The review's lines of the demo's summary."""
    if review is None:
        return [("review queue", "n/a (no decisions table)")]
    answers = ", ".join(f"{answer} {count}" for answer, count in review["answers"].items())
    # Photos left unanswered (with no true label, or answered by someone else first), and
    # those a second reviewer answered (the first contradicted a confident model).
    for name in ("unknown", "conflicts", "second_opinions"):
        if review.get(name):
            answers += f"{', ' if answers else ''}{name.replace('_', ' ')} {review[name]}"
    decisions = ", ".join(f"{name} {count}" for name, count in review["decisions"].items())
    return [
        ("review queue", f"{review['queue_before']} before, {review['queue_after']} after"),
        ("scripted answers", answers or "none"),
        ("decisions (status/source)", decisions or "none"),
    ]
