"""The demo's audit step: accuracy past the gate from the audit sample, read from the
decisions table of the deployed stack (resources/decisions-table.yml's DecisionsTable,
created by the local AWS's CloudFormation as `sls deploy` creates it)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import boto3
import pytest

from tests.decisions_table import Traffic, put_items, simulate
from tests.serverless_config import merged_resources
from training_job.demo.run import Demo
from training_job.demo.summary import audit_lines, print_summary


@pytest.fixture
def stack(local_aws: dict[str, str], unique_name: str) -> str:
    """A stack holding resources/decisions-table.yml's DecisionsTable as written (its name
    made unique)."""
    declared = merged_resources()
    table = declared["Resources"]["DecisionsTable"]
    table["Properties"]["TableName"] = f"{unique_name}-decisions"
    boto3.client("cloudformation").create_stack(
        StackName=unique_name,
        TemplateBody=json.dumps(
            {
                "Resources": {"DecisionsTable": table},
                "Outputs": {"DecisionsTableName": declared["Outputs"]["DecisionsTableName"]},
            }
        ),
    )
    return unique_name


def test_the_summary_shows_accuracy_past_the_gate_from_the_audit(
    stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = Demo(bucket="unused")
    empty = demo.review_measures(stack)
    assert audit_lines(empty) == [("  from the audit", "n/a (no decisions)")]

    start = datetime(2026, 11, 24, tzinfo=UTC)
    put_items(f"{stack}-decisions", simulate(Traffic("1", photos=1500, start=start), seed=3))
    review = demo.review_measures(stack)
    assert "model version 1: accuracy past the gate" in capsys.readouterr().out
    [(name, value)] = audit_lines(review)
    accuracy = review["1"]["accuracy_past_gate"]
    assert name == "  from the audit, version 1"
    assert value.startswith(f"{accuracy['value']:.3f} (95% CI ")
    assert f"{accuracy['n']} audited answers" in value and accuracy["n"] > 30


def test_a_version_without_audited_answers_says_so() -> None:
    review = {
        "3": {"accuracy_past_gate": {"value": None, "low": None, "high": None, "n": 0}},
        "all": {"accuracy_past_gate": {"value": None, "low": None, "high": None, "n": 0}},
    }
    assert audit_lines(review) == [("  from the audit, version 3", "n/a (no audited answer yet)")]


def test_the_printed_summary_carries_the_audit_line(capsys: pytest.CaptureFixture[str]) -> None:
    accuracy = {"value": 0.96, "low": 0.9, "high": 0.985, "n": 75, "neither": 1}
    print_summary(
        {
            "test_accuracy": 0.95,
            "model_version": 2,
            "executions": 200,
            "passed": 180,
            "stopped_by_threshold": 18,
            "unfamiliar": 2,
            "gate_accuracy": 0.97,
            "decisions": {
                "routed": 180,
                "needs_review": 20,
                "reviewed": 0,
                "audited": 9,
                "review_queue": 29,
            },
            "review": None,
            "audit": {"2": {"accuracy_past_gate": accuracy}, "all": {}},
            "endpoint_requests_per_second": 100.0,
            "alerting_windows": 1,
            "monitoring_windows": 2,
            "drift_verdicts": [],
            "report": "out/demo/monitoring/report.html",
            "rollout": {"model_version": 3, "exit_status": 0, "answers": {"v2": 40, "v3": 60}},
            "seconds": 300.0,
        }
    )
    printed = capsys.readouterr().out
    assert re.search(
        r"from the audit, version 2 +0\.960 \(95% CI 0\.900-0\.985, 75 audited answers\)", printed
    ), printed
