"""What the deployed stack uses per photo, read from AWS for the cost model
(training_job/cost/model.py): recent executions' histories, the functions' memory, the
decisions table's indexes, the endpoint's configuration and its autoscaling.

Counted as AWS bills them (https://aws.amazon.com/step-functions/pricing/): "Step
Functions counts a state transition each time a step of your workflow is executed ...
including retries", so a photo's transitions are its StateEntered events plus each task
attempt after a state's first. A Lambda task's billed duration is taken from its
TaskStarted to its end (an upper bound: it includes the invoke's round trip), rounded up
to the millisecond as Lambda bills it, times the function's MemorySize.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from training_job.cost.express import express_histories
from training_job.cost.model import Endpoint
from training_job.errors import UsageError
from training_job.serving.autoscaling import (
    SCALABLE_DIMENSION,
    SERVICE_NAMESPACE,
    resource_id,
)

TASK_ATTEMPTS = ("TaskScheduled", "LambdaFunctionScheduled", "ActivityScheduled")
TASK_ENDS = ("TaskSucceeded", "TaskFailed", "TaskTimedOut")
DYNAMODB_WRITES = ("putItem", "updateItem", "deleteItem")
WRITE_UNIT_BYTES = 1024  # DynamoDB: one write request unit per 1 KB of item
# Estimates of what reaches CloudWatch Logs, which the histories do not show: a Lambda
# invocation's START, END and REPORT lines and the handler's one JSON line; a Step
# Functions log record's fields around the history event (execution ARN, type, ids).
LAMBDA_LOG_BYTES_PER_INVOCATION = 1000
STATES_LOG_RECORD_ENVELOPE_BYTES = 250
CUSTOM_NAMESPACE_PREFIX = "SconesUnlimited/"


class CostReadError(UsageError):
    """Nothing to measure: no finished executions, no such endpoint."""


@dataclass(frozen=True)
class WorkflowUsage:
    """Per photo, averaged over the sampled executions. `express_gb_seconds` is None for a
    Standard workflow (billed per transition), an Express one's billed GB-seconds else."""

    executions: int
    state_transitions: float
    lambda_requests: float
    lambda_gb_seconds: float
    dynamodb_write_units: float
    custom_events: float
    log_bytes: float
    express_gb_seconds: float | None = None


def workflow_usage(
    sfn: Any, lambda_: Any, dynamodb: Any, machine_arn: str, sample: int, logs: Any = None
) -> WorkflowUsage:
    """The last `sample` finished executions of the state machine, counted and averaged:
    a Standard one's from their histories, an Express one's from its log group (`logs`)."""
    machine = sfn.describe_state_machine(stateMachineArn=machine_arn)
    express = machine.get("type", "STANDARD") == "EXPRESS"
    logged = machine.get("loggingConfiguration", {}).get("level", "OFF") != "OFF"
    if express:
        read = express_histories(logs, machine, sample)
        histories = [events for events, _, _ in read]
    else:
        histories = [_history(sfn, arn) for arn in _finished_executions(sfn, machine_arn, sample)]
    if not histories:
        raise CostReadError(
            f"{machine_arn} has no finished executions to count: run the workflow on a few "
            "photos first (python -m training_job evaluate)"
        )
    memory = _Memo(lambda name: lambda_.get_function_configuration(FunctionName=name)["MemorySize"])
    indexes = _Memo(lambda table: _index_keys(dynamodb, table))
    totals = [0.0] * 6
    for events in histories:
        # An Express execution's records are counted as they were ingested, below.
        counted = _count(events, memory, indexes, logged and not express)
        totals = [a + b for a, b in zip(totals, counted, strict=True)]
    n = len(histories)
    if not express:
        return WorkflowUsage(n, *(total / n for total in totals))
    totals[5] += sum(record_bytes for _, _, record_bytes in read)
    gb_seconds = sum(billed for _, billed, _ in read) / n
    return replace(
        WorkflowUsage(n, *(total / n for total in totals)), express_gb_seconds=gb_seconds
    )


def _finished_executions(sfn: Any, machine_arn: str, sample: int) -> list[str]:
    found: list[str] = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine_arn):
        for execution in page["executions"]:  # newest first
            if execution["status"] != "RUNNING":
                found.append(execution["executionArn"])
            if len(found) == sample:
                return found
    return found


def _history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    return [event for page in pages for event in page["events"]]


def _count(
    events: list[dict[str, Any]], memory: _Memo, indexes: _Memo, logged: bool
) -> tuple[float, float, float, float, float, float]:
    """One execution's transitions, Lambda requests and GB-seconds, DynamoDB write units,
    custom events and log bytes."""
    by_id = {event["id"]: event for event in events}
    entered = [e for e in events if e["type"].endswith("StateEntered")]
    task_states = sum(1 for e in entered if e["type"] == "TaskStateEntered")
    attempts = [e for e in events if e["type"] in TASK_ATTEMPTS]
    transitions = len(entered) + len(attempts) - task_states
    lambda_requests = gb_seconds = write_units = custom_events = 0.0
    for event in events:
        if event["type"] not in TASK_ENDS:
            continue
        started = by_id.get(event.get("previousEventId"))
        if started is None or started["type"] != "TaskStarted":
            continue
        scheduled = by_id.get(started.get("previousEventId"))
        if scheduled is None or scheduled["type"] != "TaskScheduled":
            continue
        details = scheduled["taskScheduledEventDetails"]
        parameters = json.loads(details.get("parameters") or "{}")
        if details["resourceType"] == "lambda":
            milliseconds = (event["timestamp"] - started["timestamp"]).total_seconds() * 1000
            lambda_requests += 1
            gb_seconds += memory(parameters["FunctionName"]) / 1024 * math.ceil(milliseconds) / 1000
        elif details["resourceType"] == "dynamodb" and details["resource"] in DYNAMODB_WRITES:
            write_units += _write_units(parameters, indexes)
        elif details["resourceType"] == "events" and details["resource"].startswith("putEvents"):
            custom_events += len(parameters.get("Entries", []))
    log_bytes = lambda_requests * LAMBDA_LOG_BYTES_PER_INVOCATION
    if logged:
        log_bytes += sum(_log_record_bytes(event) for event in events)
    return transitions, lambda_requests, gb_seconds, write_units, custom_events, log_bytes


def _write_units(parameters: dict[str, Any], indexes: _Memo) -> float:
    """The table's units for the item, and as many again for each index whose keys the
    item has (a sparse index costs only for items in it)."""
    item = parameters.get("Item") or parameters.get("Key") or {}
    units = math.ceil(len(json.dumps(item).encode()) / WRITE_UNIT_BYTES)
    in_indexes = sum(1 for keys in indexes(parameters["TableName"]) if keys <= item.keys())
    return units * (1 + in_indexes)


def _index_keys(dynamodb: Any, table: str) -> list[set[str]]:
    described = dynamodb.describe_table(TableName=table)["Table"]
    return [
        {key["AttributeName"] for key in index["KeySchema"]}
        for index in described.get("GlobalSecondaryIndexes", [])
    ]


def _log_record_bytes(event: dict[str, Any]) -> int:
    """An event as logged without execution data (the state machine's includeExecutionData
    false): its details without input, output or parameters."""
    kept = {
        key: (
            {k: v for k, v in value.items() if k not in ("input", "output", "parameters")}
            if isinstance(value, dict)
            else value
        )
        for key, value in event.items()
    }
    return len(json.dumps(kept, default=str).encode()) + STATES_LOG_RECORD_ENVELOPE_BYTES


class _Memo:
    """One AWS call per distinct argument."""

    def __init__(self, read: Any) -> None:
        self.read, self.seen = read, dict[str, Any]()

    def __call__(self, key: str) -> Any:
        if key not in self.seen:
            self.seen[key] = self.read(key)
        return self.seen[key]


@dataclass(frozen=True)
class EndpointUsage:
    variants: list[Endpoint]
    capture_share: float  # of requests, each an S3 object at most


def endpoint_usage(
    sagemaker: Any, autoscaling: Any, endpoint_name: str, default_target: float
) -> EndpointUsage:
    """The endpoint's production variants with their autoscaling (a variant without a
    scalable target runs its initial count; one with a target but no target-tracking
    policy is priced at `default_target`), and the share of requests it captures."""
    try:
        described = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as error:
        if error_code(error) == "ValidationException":
            raise CostReadError(
                f"no endpoint {endpoint_name!r} in this account and region: pass --endpoint "
                "NAME, or --skip-endpoint to price the workflow without it"
            ) from error
        raise
    config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    variants = config["ProductionVariants"]
    weights = sum(float(v.get("InitialVariantWeight", 1.0)) for v in variants) or 1.0
    priced = [
        _variant(autoscaling, endpoint_name, variant, default_target, weights)
        for variant in variants
    ]
    capture = config.get("DataCaptureConfig") or {}
    share = float(capture.get("InitialSamplingPercentage", 0)) / 100 if capture else 0.0
    return EndpointUsage(priced, share if capture.get("EnableCapture", True) else 0.0)


def _variant(
    autoscaling: Any, endpoint_name: str, variant: dict[str, Any], default: float, weights: float
) -> Endpoint:
    resource = resource_id(endpoint_name, variant["VariantName"])
    targets = autoscaling.describe_scalable_targets(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceIds=[resource],
        ScalableDimension=SCALABLE_DIMENSION,
    )["ScalableTargets"]
    share = float(variant.get("InitialVariantWeight", 1.0)) / weights
    count = int(variant.get("InitialInstanceCount", 1))
    if not targets:
        return Endpoint(variant["InstanceType"], count, count, None, share)
    policies = autoscaling.describe_scaling_policies(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceId=resource,
        ScalableDimension=SCALABLE_DIMENSION,
    )["ScalingPolicies"]
    tracked = [
        float(p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"])
        for p in policies
        if "TargetTrackingScalingPolicyConfiguration" in p
    ]
    return Endpoint(
        variant["InstanceType"],
        int(targets[0]["MinCapacity"]),
        int(targets[0]["MaxCapacity"]),
        tracked[0] if tracked else default,
        share,
    )


ALARM_TYPES = ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")


def alarm_count(cloudformation: Any, stack: str) -> int:
    """The alarms the stack's deployed template declares, whatever CloudFormation named
    them."""
    try:
        body = cloudformation.get_template(StackName=stack)["TemplateBody"]
    except ClientError as error:
        if error_code(error) == "ValidationError":  # no such stack
            raise CostReadError(
                f"no stack {stack!r} in this account and region: pass --stack SERVICE-STAGE"
            ) from error
        raise
    # boto3 hands a JSON template over parsed; `sls deploy` uploads JSON, never YAML.
    try:
        template = json.loads(body) if isinstance(body, str) else body
    except ValueError as error:
        raise CostReadError(f"stack {stack!r} has a template that is not JSON") from error
    resources = template.get("Resources", {}).values()
    return sum(1 for resource in resources if resource.get("Type") in ALARM_TYPES)


def custom_metric_count(cloudwatch: Any) -> int:
    """The project's own metrics (namespaces SconesUnlimited/...), each billed a month."""
    seen: set[tuple[str, str, str]] = set()
    for page in cloudwatch.get_paginator("list_metrics").paginate():
        for metric in page["Metrics"]:
            if metric["Namespace"].startswith(CUSTOM_NAMESPACE_PREFIX):
                seen.add((metric["Namespace"], metric["MetricName"], _dimensions(metric)))
    return len(seen)


def _dimensions(metric: dict[str, Any]) -> str:
    pairs: Iterable[dict[str, str]] = metric.get("Dimensions", [])
    return json.dumps(sorted((d["Name"], d["Value"]) for d in pairs))
