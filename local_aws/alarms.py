"""A minimal CloudWatch alarm evaluator for the local AWS (moto stores alarms, never
evaluates them).

It evaluates the alarm shapes this project creates: one metric (namespace, name,
dimensions), a Statistic (SampleCount, Sum, Average, Minimum, Maximum) or a percentile
ExtendedStatistic (p0-p100), a Period, EvaluationPeriods, DatapointsToAlarm, a threshold
with a ComparisonOperator, and TreatMissingData. Metric math alarms (`Metrics`) and
composite alarms are not evaluated (their state is left as it is). It sets the alarm's
state in moto (DescribeAlarms shows it, with a reason), as CloudWatch would.

One difference, stated in docs/local-mode.md: CloudWatch evaluates an alarm once a
minute on whole periods; this evaluator is called every second by whoever needs the
answer (local_aws/sagemaker_endpoints.py, during a deployment's baking periods) and
treats the last EvaluationPeriods x Period seconds up to now as the periods, so a breach
is seen within a second of its data instead of at the next minute.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.cloudwatch.models import (
    CloudWatchBackend,
    MetricAggregatedDatum,
    MetricDatum,
    cloudwatch_backends,
)

STATISTICS = ("SampleCount", "Sum", "Average", "Minimum", "Maximum")
COMPARISONS = {
    "GreaterThanThreshold": lambda value, threshold: value > threshold,
    "GreaterThanOrEqualToThreshold": lambda value, threshold: value >= threshold,
    "LessThanThreshold": lambda value, threshold: value < threshold,
    "LessThanOrEqualToThreshold": lambda value, threshold: value <= threshold,
}
ALARM, OK, INSUFFICIENT_DATA = "ALARM", "OK", "INSUFFICIENT_DATA"
EVALUATOR = "(local evaluator)"  # ends the reasons this module sets


def backend(account: str, region: str) -> CloudWatchBackend:
    return cloudwatch_backends[account][region]


def statistic(data: Sequence[Any], name: str) -> float | None:
    """One statistic of a period's data points (raw values and statistic sets); None when
    the period has no data. A percentile needs raw values (StatisticValues have none)."""
    count = sum(_count(datum) for datum in data)
    if count == 0:
        return None
    if name == "SampleCount":
        return count
    total = sum(_sum(datum) for datum in data)
    if name == "Sum":
        return total
    if name == "Average":
        return total / count
    if name == "Minimum":
        return min(_minimum(datum) for datum in data)
    if name == "Maximum":
        return max(_maximum(datum) for datum in data)
    if name.startswith("p"):
        values = sorted(datum.value for datum in data if isinstance(datum, MetricDatum))
        if not values:
            return None
        rank = max(0, math.ceil(float(name[1:]) / 100 * len(values)) - 1)
        return values[rank]
    raise ValueError(f"statistic {name} is not evaluated locally")


def _count(datum: Any) -> float:
    return datum.sample_count if isinstance(datum, MetricAggregatedDatum) else 1.0


def _sum(datum: Any) -> float:
    return datum.sum if isinstance(datum, MetricAggregatedDatum) else datum.value


def _minimum(datum: Any) -> float:
    return datum.min if isinstance(datum, MetricAggregatedDatum) else datum.value


def _maximum(datum: Any) -> float:
    return datum.max if isinstance(datum, MetricAggregatedDatum) else datum.value


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # moto keeps naive UTC


def _matching(cloudwatch: CloudWatchBackend, alarm: Any, since: datetime) -> list[Any]:
    wanted = {(dimension.name, dimension.value) for dimension in alarm.dimensions}
    found = []
    for datum in cloudwatch.metric_data:
        if datum.namespace != alarm.namespace or datum.name != alarm.metric_name:
            continue
        if _utc(datum.timestamp) <= since:
            continue
        if {(dimension.name, dimension.value) for dimension in datum.dimensions} != wanted:
            continue
        found.append(datum)
    return found


def evaluate(cloudwatch: CloudWatchBackend, alarm: Any, now: datetime | None = None) -> str:
    """The alarm's state from its metric's data now, set on the alarm when it changes."""
    if alarm.metric_data_queries or alarm.rule or not alarm.metric_name:
        return str(alarm.state_value)  # metric math and composite alarms: not evaluated
    now = now or datetime.now(UTC)
    period = timedelta(seconds=int(alarm.period))
    periods = int(alarm.evaluation_periods)
    needed = int(alarm.datapoints_to_alarm or periods)
    name = alarm.extended_statistic or alarm.statistic
    data = _matching(cloudwatch, alarm, now - period * periods)
    values: list[float | None] = []
    for index in range(periods):  # the newest period first, up to and including now
        end = now - period * index
        in_period = [datum for datum in data if end - period < _utc(datum.timestamp) <= end]
        values.append(statistic(in_period, name))
    breaches = COMPARISONS[alarm.comparison_operator]
    missing = alarm.treat_missing_data or "missing"
    breaching = sum(1 for value in values if value is not None and breaches(value, alarm.threshold))
    if missing == "breaching":
        breaching += sum(1 for value in values if value is None)
    present = sum(1 for value in values if value is not None)
    if breaching >= needed:
        state = ALARM
    elif present == 0 and missing in ("missing", "ignore"):
        state = INSUFFICIENT_DATA if missing == "missing" else str(alarm.state_value)
    else:
        state = OK
    if state != alarm.state_value:
        shown = ", ".join("-" if value is None else f"{value:g}" for value in values)
        reason = (
            f"Threshold Crossed: {breaching} of the last {periods} datapoint(s) [{shown}] "
            f"{'breached' if state == ALARM else 'did not breach'} the threshold "
            f"({alarm.comparison_operator} {alarm.threshold:g}) {EVALUATOR}"
        )
        cloudwatch.set_alarm_state(alarm.name, reason, json.dumps({"values": shown}), state)
    return state


def in_alarm(account: str, region: str, names: Iterable[str]) -> list[str]:
    """Which of the named alarms are in ALARM now (an alarm that does not exist is not)."""
    cloudwatch = backend(account, region)
    firing = []
    for name in names:
        alarm = cloudwatch.alarms.get(name)
        if alarm is None:
            continue
        # An ALARM someone set (SetAlarmState: how an operator stops a deployment) holds
        # until the evaluator would change it back, after which it is the data's again.
        manual = alarm.state_value == ALARM and not alarm.state_reason.endswith(EVALUATOR)
        if manual or evaluate(cloudwatch, alarm) == ALARM:
            firing.append(name)
    return firing
