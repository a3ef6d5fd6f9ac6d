"""reviewMonitor against the local AWS: a decisions table as the workflow and the review page
leave it, and the queue and audit metrics it publishes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from handlers import review_monitor
from handlers.errors import ConfigurationError
from tests.decisions_table import Traffic, create_decisions_table, put_items, simulate


@pytest.fixture
def table(
    local_aws: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    create_decisions_table(unique_name)
    monkeypatch.setenv("DECISIONS_TABLE", unique_name)
    monkeypatch.setenv("METRIC_NAMESPACE", f"Test/{unique_name}")
    for name in ("AUDIT_WINDOW_HOURS", "MIN_AUDIT_SAMPLE"):
        monkeypatch.delenv(name, raising=False)
    yield unique_name


def recent(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def published(table: str) -> dict[str, list[dict[str, str]]]:
    metrics = boto3.client("cloudwatch").list_metrics(Namespace=f"Test/{table}")["Metrics"]
    found: dict[str, list[dict[str, str]]] = {}
    for metric in metrics:
        found.setdefault(metric["MetricName"], []).extend(metric["Dimensions"])
    return found


def test_an_empty_queue_publishes_zero_depth_and_zero_wait(table: str) -> None:
    summary = review_monitor.handler({}, None)
    assert summary["queue_depth"] == 0
    assert summary["oldest_wait_seconds"] == 0.0
    assert summary["audited_answers"] == 0
    assert "AccuracyPastGate" not in summary["metrics"]  # no sample: nothing to alarm on
    assert {"ReviewQueueDepth", "OldestReviewWaitSeconds", "AuditedAnswers"} <= set(
        published(table)
    )


def test_queue_depth_and_the_oldest_wait_come_from_the_sparse_index(table: str) -> None:
    # 400 photos over the last ~6.7 hours, half of the queued ones still waiting.
    traffic = Traffic(
        "3", photos=400, start=recent(400 / 60), answered_share=0.5, doubtful_share=0.3
    )
    items = simulate(traffic, seed=2)
    put_items(table, items)
    waiting = [i for i in items if "review_pending" in i]
    summary = review_monitor.handler({}, None)
    assert summary["queue_depth"] == len(waiting) > 20
    oldest = min(datetime.fromisoformat(i["queued_at"]) for i in waiting)
    expected = (datetime.now(UTC) - oldest).total_seconds()
    assert summary["oldest_wait_seconds"] == pytest.approx(expected, abs=60)


def test_count_query_follows_every_page(table: str) -> None:
    """A COUNT Query stops at 1 MB read per page: items of ~40 KB make that 25 per page."""
    traffic = Traffic("3", photos=120, start=recent(3), doubtful_share=1.0, answered_share=0.0)
    items = simulate(traffic, seed=3)
    for item in items:
        item["note"] = "x" * 40_000  # a big attribute (projected: the index keeps ALL)
    put_items(table, items)
    assert review_monitor.handler({}, None)["queue_depth"] == 120
    client = boto3.client("dynamodb")
    calls: list[str] = []
    client.meta.events.register("before-call.dynamodb.Query", lambda **_: calls.append("Query"))
    assert review_monitor.queue_depth(client, table) == 120
    assert len(calls) >= 4, "the count was not read page by page"


def test_accuracy_past_the_gate_is_published_only_from_a_large_enough_sample(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~5% of 1600 passed photos are audited: about 70 answers, under MIN_AUDIT_SAMPLE=100.
    traffic = Traffic("3", photos=1600, start=recent(30), accuracy=0.8, seconds_between_photos=60)
    items = simulate(traffic, seed=4)
    put_items(table, items)
    audited = [i for i in items if i.get("review_reason") == "audit" and "answer" in i]
    monkeypatch.setenv("MIN_AUDIT_SAMPLE", str(len(audited) + 1))
    small = review_monitor.handler({}, None)
    assert small["audited_answers"] == len(audited)
    assert "AccuracyPastGate" not in small["metrics"]

    monkeypatch.setenv("MIN_AUDIT_SAMPLE", str(len(audited)))
    summary = review_monitor.handler({}, None)
    right = sum(
        i["answer"] == ("bicycle" if i["inferences"][0] > i["inferences"][1] else "motorcycle")
        for i in audited
    )
    assert summary["metrics"]["AccuracyPastGate"] == pytest.approx(right / len(audited))
    assert summary["metrics"]["AccuracyPastGate[3]"] == pytest.approx(right / len(audited))
    assert summary["metrics"]["AccuracyPastGateLow"] < right / len(audited)
    dimensions = published(table)["AccuracyPastGate"]
    assert {"Name": "ModelVersion", "Value": "3"} in dimensions


def test_only_answers_inside_the_window_count(table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    old = simulate(Traffic("2", photos=800, start=recent(24 * 30)), seed=5)
    new = simulate(Traffic("3", photos=800, start=recent(14)), seed=6)
    put_items(table, old + new)
    monkeypatch.setenv("AUDIT_WINDOW_HOURS", "24")
    audited_new = [i for i in new if i.get("review_reason") == "audit" and "answer" in i]
    assert review_monitor.handler({}, None)["audited_answers"] == len(audited_new)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DECISIONS_TABLE", ""),
        ("AUDIT_WINDOW_HOURS", "0"),
        ("AUDIT_WINDOW_HOURS", "-3"),
        ("AUDIT_WINDOW_HOURS", "1e9"),
        ("MIN_AUDIT_SAMPLE", "fifty"),
        ("MIN_AUDIT_SAMPLE", "9" * 40),
    ],
)
def test_bad_settings_are_named(
    table: str, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        review_monitor.handler({}, None)


def test_a_missing_table_fails_the_run_with_aws_error(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECISIONS_TABLE", table + "-gone")
    with pytest.raises(boto3.client("dynamodb").exceptions.ResourceNotFoundException):
        review_monitor.handler({}, None)


@pytest.mark.parametrize("queued_at", ["yesterday", "", "2026-13-45T99:00:00"])
def test_an_unreadable_queued_at_publishes_depth_without_age(table: str, queued_at: str) -> None:
    [item] = simulate(
        Traffic("3", photos=1, start=recent(1), doubtful_share=1.0, answered_share=0.0)
    )
    item["queued_at"] = queued_at or " "
    put_items(table, [item])
    summary = review_monitor.handler({}, None)
    assert summary["queue_depth"] == 1
    assert summary["oldest_wait_seconds"] is None
    assert "OldestReviewWaitSeconds" not in summary["metrics"]


def test_a_queued_at_in_the_future_waits_zero(table: str) -> None:
    [item] = simulate(
        Traffic("3", photos=1, start=recent(-5), doubtful_share=1.0, answered_share=0.0)
    )
    put_items(table, [item])
    assert review_monitor.handler({}, None)["oldest_wait_seconds"] == 0.0
