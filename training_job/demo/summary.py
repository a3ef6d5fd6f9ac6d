"""The demo's summary: how the photos were decided (from the decisions table), the audit's
accuracy past the gate per model version, and the printed table."""

from __future__ import annotations

from typing import Any

import boto3

from contract.review_quality import ALL_VERSIONS
from training_job.demo import review_step


def decision_counts(table: str) -> dict[str, int]:
    """How the photos were decided, from the decisions table (docs/events.md): items by
    status, the audited ones among the routed, and the review queue's length."""
    counts = {"routed": 0, "needs_review": 0, "reviewed": 0, "audited": 0, "review_queue": 0}
    pages = (
        boto3.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=table,
            ProjectionExpression="#status, review_reason, review_pending",
            ExpressionAttributeNames={"#status": "status"},
        )
    )
    for page in pages:
        for item in page["Items"]:
            status = item["status"]["S"]
            counts[status] = counts.get(status, 0) + 1
            counts["audited"] += item.get("review_reason", {}).get("S") == "audit"
            counts["review_queue"] += "review_pending" in item
    return counts


def describe_decisions(counts: dict[str, int]) -> str:
    return (
        f"{counts['routed']} routed ({counts['audited']} audited), "
        f"{counts['needs_review']} need review; {counts['review_queue']} in the review queue"
    )


def print_summary(summary: dict[str, Any]) -> None:
    gate = summary["gate_accuracy"]
    lines = [
        ("model version (approved)", f"{summary['model_version']}"),
        ("test accuracy", f"{summary['test_accuracy']:.3f}"),
        ("executions", f"{summary['executions']}"),
        ("passed the gate", f"{summary['passed']}"),
        ("stopped (< threshold)", f"{summary['stopped_by_threshold']}"),
        ("stopped (unfamiliar)", f"{summary['unfamiliar']}"),
        ("accuracy past the gate", "n/a" if gate is None else f"{gate:.3f}"),
        ("decisions", describe_decisions(summary["decisions"])),
        ("endpoint (8 clients)", f"{summary['endpoint_requests_per_second']} requests/s"),
        (
            "drift",
            f"{summary['alerting_windows']} of {summary['monitoring_windows']} windows alerting",
        ),
        *(
            (
                f"  window {verdict['window']} ({verdict['records']} records)",
                "ALERT: " + ", ".join(verdict["alerting_tests"])
                if verdict["alert"]
                else "no drift",
            )
            for verdict in summary["drift_verdicts"]
        ),
        *review_step.summary_lines(summary["review"]),
        *audit_lines(summary["audit"]),
        ("report", summary["report"]),
        (
            f"rollout of version {summary['rollout']['model_version']}",
            ("completed" if summary["rollout"]["exit_status"] == 0 else "stopped")
            + " under load: "
            + ", ".join(f"{k} {v}" for k, v in sorted(summary["rollout"]["answers"].items())),
        ),
        ("total time", f"{summary['seconds']:.0f} s"),
    ]
    print("\n==> summary")
    for name, value in lines:
        print(f"    {name:<28}{value}")


def audit_lines(review: dict[str, Any]) -> list[tuple[str, str]]:
    """Accuracy past the gate as measured from the audit sample (people's answers), per
    model version: the number with its 95% interval and sample size."""
    lines = []
    for version, measures in review.items():
        if version == ALL_VERSIONS:
            continue
        accuracy = measures["accuracy_past_gate"]
        value = (
            f"{accuracy['value']:.3f} (95% CI {accuracy['low']:.3f}-{accuracy['high']:.3f}, "
            f"{accuracy['n']} audited answers)"
            if accuracy["n"]
            else "n/a (no audited answer yet)"
        )
        lines.append((f"  from the audit, version {version}", value))
    return lines or [("  from the audit", "n/a (no decisions)")]
