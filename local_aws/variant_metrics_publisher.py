"""The per-variant metrics SageMaker publishes, at the local AWS: a publisher thread reads
the local endpoint's per-variant counters every second and puts them into CloudWatch as
SageMaker publishes them (contract/variant_metrics.py), so alarms have data.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import requests

from contract import variant_metrics
from local_aws import alarms
from local_aws.endpoint.metrics import ANSWER_COUNTERS
from local_aws.sagemaker_runtime import EndpointUnavailable, upstream_url

log = logging.getLogger(__name__)

PUBLISH_SECONDS = 1.0
LATENCY_OVERFLOW_SECONDS = 10.0  # the value published for answers past the last bucket


def _timestamp() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # moto keeps naive UTC times


def publish(account: str, region: str, state: dict[str, Any], previous: dict[str, Any]) -> None:
    """Put the counters' growth since `previous` into CloudWatch, per variant."""
    cloudwatch = alarms.backend(account, region)
    endpoint = state["endpoint_name"]
    for variant, counters in state["variants"].items():
        before: dict[str, Any] | None = previous.get(variant)
        if before is None or counters["invocations"] < before["invocations"]:
            before = {key: 0 for key in counters}
            before["latency_buckets"] = [[bound, 0] for bound, _ in counters["latency_buckets"]]
        grown = {key: counters[key] - before[key] for key in counters if key != "latency_buckets"}
        latencies = [
            (bound if bound is not None else LATENCY_OVERFLOW_SECONDS, count - was)
            for (bound, count), (_, was) in zip(
                counters["latency_buckets"], before["latency_buckets"], strict=True
            )
        ]
        calls = grown["invocations"] + grown["errors_4xx"] + grown["errors_5xx"]
        if calls <= 0:
            continue
        dimensions = variant_metrics.dimensions(endpoint, variant)
        now = _timestamp()
        data = [
            {"MetricName": variant_metrics.INVOCATIONS, "Value": calls, "Unit": "None"},
            {
                "MetricName": variant_metrics.INVOCATION_4XX_ERRORS,
                "Value": grown["errors_4xx"],
                "Unit": "None",
            },
            {
                "MetricName": variant_metrics.INVOCATION_5XX_ERRORS,
                "Value": grown["errors_5xx"],
                "Unit": "None",
            },
        ]
        values = [(seconds * 1e6, count) for seconds, count in latencies if count > 0]
        if values:
            data.append(
                {
                    "MetricName": variant_metrics.MODEL_LATENCY,
                    "Values": [value for value, _ in values],
                    "Counts": [count for _, count in values],
                    "Unit": "Microseconds",
                }
            )
        for datum in data:
            datum["Dimensions"] = dimensions
            datum["Timestamp"] = now
        cloudwatch.put_metric_data(variant_metrics.SAGEMAKER_NAMESPACE, data)
        answered = grown["invocations"]
        if answered > 0:
            cloudwatch.put_metric_data(
                variant_metrics.ENDPOINT_NAMESPACE,
                [
                    {
                        "MetricName": metric,
                        "Dimensions": dimensions,
                        "Timestamp": now,
                        "Unit": "None",
                        "StatisticValues": _answer_statistics(metric, grown[counter], answered),
                    }
                    for metric, counter in ANSWER_COUNTERS.items()
                ],
            )


def _answer_statistics(metric: str, total: float, answered: float) -> dict[str, float]:
    """A period's statistic set of an answer metric from its sum: exact for the 0-or-1
    metrics (a share); Confidence's Minimum and Maximum are its mean, since the local
    endpoint keeps sums, not extremes (docs/local-mode.md)."""
    if metric == variant_metrics.CONFIDENCE:
        low = high = total / answered
    else:
        low = 0.0 if total < answered else 1.0
        high = 1.0 if total > 0 else 0.0
    return {"SampleCount": answered, "Sum": total, "Minimum": low, "Maximum": high}


class Publisher:
    """One thread per local AWS: the local endpoint's counters to CloudWatch each second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, account: str, region: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(account, region), name="variant-metrics", daemon=True
                )
                self._thread.start()

    def _run(self, account: str, region: str) -> None:
        previous: dict[str, Any] = {}
        while True:
            time.sleep(PUBLISH_SECONDS)
            try:
                state = requests.get(f"{upstream_url()}/_local/routing", timeout=5).json()
                publish(account, region, state, previous)
                previous = state["variants"]
            except (requests.RequestException, EndpointUnavailable, ValueError, KeyError) as error:
                log.debug("variant metrics not read: %s", error)


PUBLISHER = Publisher()
