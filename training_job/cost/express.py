"""An Express workflow's executions, read for the cost model from its log group: Express
keeps no execution history in Step Functions ("Using CloudWatch Logs to log execution
history", Step Functions developer guide), only the records its logging configuration
sends to CloudWatch Logs (level ALL: every history event).

The records are turned back into history events for `cost_usage` to count as it counts a
Standard workflow's. Logged without execution data, a task's record has no parameters:
they are taken from the state's Parameters in the definition (the function, the table, an
item's attributes; a JSONPath value stands for its value, a few bytes, as the workflow's
are). Express bills each execution and its duration, rounded up to 100 ms, times its
memory in 64-MB chunks (Step Functions pricing); the workflow's state is far under 64 MB.
"""

from __future__ import annotations

import datetime
import json
import math
import time
from typing import Any

from training_job.errors import UsageError

END_TYPES = ("ExecutionSucceeded", "ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted")
# CloudWatch Logs filter syntax: a record with any of the terms ("Filter pattern syntax").
ENDS_PATTERN = " ".join(f'?"{end}"' for end in END_TYPES)
LOOKBACK_SECONDS = 3600  # executions ended in the last hour are sampled
BILLED_MEMORY_GB = 64 / 1024
BILLED_DURATION_UNIT_SECONDS = 0.1


class ExpressReadError(UsageError):
    """An Express workflow whose executions cannot be read: no logging at level ALL, or
    no execution ended in the last hour."""


def log_group_name(machine: dict[str, Any]) -> str:
    """The group an Express machine logs every event to, or an error saying why not."""
    logging = machine.get("loggingConfiguration") or {}
    destinations = logging.get("destinations") or []
    if logging.get("level") != "ALL" or not destinations:
        raise ExpressReadError(
            f"{machine['stateMachineArn']} is an EXPRESS workflow without logging at level "
            "ALL: its history is only in its log group, and there is none to count"
        )
    arn = str(destinations[0]["cloudWatchLogsLogGroup"]["logGroupArn"])
    return arn.split(":log-group:", 1)[1].split(":", 1)[0]


def express_histories(
    logs: Any, machine: dict[str, Any], sample: int
) -> list[tuple[list[dict[str, Any]], float, int]]:
    """The newest `sample` executions ended in the last hour: each one's history events,
    its billed GB-seconds, and its records' bytes as ingested."""
    group = log_group_name(machine)
    since = int((time.time() - LOOKBACK_SECONDS) * 1000)
    ended = [
        record
        for record in _records(logs, group, since, ENDS_PATTERN)
        if record["type"] in END_TYPES
    ]
    ended.sort(key=lambda record: int(record["event_timestamp"]), reverse=True)
    newest = list(dict.fromkeys(record["execution_arn"] for record in ended))[:sample]
    if not newest:
        raise ExpressReadError(
            f"{machine['stateMachineArn']} logged no execution that ended in the last hour: "
            "run the workflow on a few photos first (python -m training_job evaluate)"
        )
    states = json.loads(machine["definition"]).get("States", {})
    histories = []
    for execution_arn in newest:
        records = _records(logs, group, since, f'"{execution_arn}"')
        records = [r for r in records if r["execution_arn"] == execution_arn]
        events = [_history_event(record) for record in records]
        _parameters_from_definition(events, states)
        histories.append((events, _billed_gb_seconds(records), _bytes(records)))
    return histories


def _records(logs: Any, group: str, since: int, pattern: str) -> list[dict[str, Any]]:
    pages = logs.get_paginator("filter_log_events").paginate(
        logGroupName=group, startTime=since, filterPattern=pattern
    )
    return [json.loads(event["message"]) for page in pages for event in page["events"]]


def _history_event(record: dict[str, Any]) -> dict[str, Any]:
    """A log record as GetExecutionHistory would answer the event."""
    kind = record["type"]
    return {
        "id": int(record["id"]),
        "previousEventId": int(record.get("previous_event_id", 0)),
        "type": kind,
        "timestamp": datetime.datetime.fromtimestamp(
            int(record["event_timestamp"]) / 1000, tz=datetime.UTC
        ),
        f"{kind[0].lower()}{kind[1:]}EventDetails": dict(record.get("details") or {}),
    }


def _parameters_from_definition(events: list[dict[str, Any]], states: dict[str, Any]) -> None:
    """Each TaskScheduled's parameters: its state's, the last Task state entered before it
    (a retry's TaskScheduled follows the failure, not the state's entry)."""
    state = ""
    for event in sorted(events, key=lambda event: event["id"]):
        entered = event.get("taskStateEnteredEventDetails")
        if entered is not None:
            state = str(entered.get("name", ""))
        details = event.get("taskScheduledEventDetails")
        if details is not None and "parameters" not in details:
            details["parameters"] = json.dumps(states.get(state, {}).get("Parameters", {}))


def _billed_gb_seconds(records: list[dict[str, Any]]) -> float:
    times = [int(r["event_timestamp"]) for r in records]
    seconds = (max(times) - min(times)) / 1000 if times else 0.0
    units = max(1, math.ceil(round(seconds / BILLED_DURATION_UNIT_SECONDS, 6)))
    return BILLED_MEMORY_GB * units * BILLED_DURATION_UNIT_SECONDS


def _bytes(records: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(record).encode()) for record in records)
