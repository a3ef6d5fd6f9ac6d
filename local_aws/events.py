"""EventBridge in the local AWS: the workflow's trigger (S3 -> EventBridge -> Step
Functions), and PutEvents held to AWS's size limit.

moto's S3 does send an "Object Created" event to EventBridge when the bucket has
EventBridge notifications on (`local_aws.cloudformation` makes a template's
`EventBridgeConfiguration` turn them on), and moto matches it against the rules. Two gaps
remained in moto 5.2.5's `Rule.send_to_targets`:

1. a Step Functions state machine target was not supported at all (it raised
   `NotImplementedError`, which S3's notifier swallows: no execution ever started);
2. for events from S3, moto skips the target's `InputTransformer` (`transform_input=False`),
   and its template filler inserts string values without their JSON quotes;
3. moto's S3 event names the object's ETag `eTag` (the name in S3's own notification
   format); in the EventBridge event AWS sends it is `etag` (S3 user guide, "EventBridge
   event message structure"), which the trigger's `$.detail.object.etag` reads.

`patch_state_machine_targets` handles state machine targets itself (every other target
is left to moto): the target's `Input`, `InputPath` or `InputTransformer` shapes the
execution's input as EventBridge does, and one execution starts per matching event, with
a generated name, through the same Step Functions backend the API serves, if the target's
role (assumed by events.amazonaws.com) allows states:StartExecution on the state machine.

A delivery that fails (the role cannot be assumed or may not start the execution, the
state machine is gone) counts in AWS/Events FailedInvocations and, when the target has a
`DeadLetterConfig`, goes to that SQS queue as EventBridge sends it: the event as the body,
with the RULE_ARN, TARGET_ARN, ERROR_CODE and ERROR_MESSAGE attributes, only if the queue's
policy lets events.amazonaws.com send to it for this rule (InvocationsSentToDLQ, else
InvocationsFailedToBeSentToDLQ and the event is lost). None of these failures is retriable
on AWS either (EventBridge User Guide, "Using dead-letter queues to process undelivered
events": missing permissions and a missing target go to the DLQ without retries), so the
target's `RetryPolicy` is kept but never needed here.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def _inside_string(template: str, position: int) -> bool:
    """Whether `position` of a JSON-ish template lies inside a string literal."""
    inside = False
    escaped = False
    for character in template[:position]:
        if escaped:
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == '"':
            inside = not inside
    return inside


def _json_path_value(event: dict[str, Any], path: str) -> Any:
    """The value at a simple JSONPath (`$.a.b`, `$.a[0]`), or None when absent."""
    from jsonpath_ng.ext import parse  # moto's own dependency for the same job

    matches = parse(path).find(event)
    return matches[0].value if matches else None


def transform_input(target: dict[str, Any], event: dict[str, Any]) -> str:
    """The input EventBridge delivers to `target` for `event`."""
    if "Input" in target:
        return str(target["Input"])
    if "InputPath" in target:
        return json.dumps(_json_path_value(event, target["InputPath"]))
    transformer = target.get("InputTransformer")
    if not transformer:
        return json.dumps(event)
    values: dict[str, Any] = {
        name: _json_path_value(event, path)
        for name, path in (transformer.get("InputPathsMap") or {}).items()
    }
    values["aws.events.event"] = values["aws.events.event.json"] = event
    values["aws.events.rule-arn"] = target.get("_rule_arn", "")
    template = str(transformer["InputTemplate"])

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        if _inside_string(template, match.start()):
            text = value if isinstance(value, str) else json.dumps(value)
            return json.dumps(text)[1:-1]  # escaped, without the quotes the template has
        return json.dumps(value)  # a string gets its quotes, as EventBridge does

    return PLACEHOLDER.sub(fill, template)


class DeliveryFailed(Exception):
    """A target invocation EventBridge gives up on, with the DLQ's ERROR_CODE for it."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


def start_execution(
    rule: Any, target: dict[str, Any], execution_input: str, event: dict[str, Any]
) -> None:
    """Start the target state machine as EventBridge does: with the target's role, assumed
    by events.amazonaws.com for the rule, which must allow states:StartExecution on it.
    A failed invocation starts nothing, counts in AWS/Events FailedInvocations, and goes
    to the target's dead-letter queue if it has one."""
    target_arn = str(target["Arn"])
    account_id, region = target_arn.split(":")[4], target_arn.split(":")[3]
    rule_arn = str(getattr(rule, "arn", ""))
    rule_name = str(getattr(rule, "name", ""))
    try:
        _start_as_target_role(rule_arn, target, execution_input)
    except DeliveryFailed as failed:
        print(f"local AWS: EventBridge rule {rule_arn}: {failed.error_code}: {failed}", flush=True)
        count_rule_metric(account_id, region, rule_name, "FailedInvocations")
        queue_arn = str((target.get("DeadLetterConfig") or {}).get("Arn") or "")
        if queue_arn:
            sent = send_to_dead_letter_queue(queue_arn, rule_arn, target_arn, event, failed)
            metric = "InvocationsSentToDLQ" if sent else "InvocationsFailedToBeSentToDLQ"
            count_rule_metric(account_id, region, rule_name, metric)


def _start_as_target_role(rule_arn: str, target: dict[str, Any], execution_input: str) -> None:
    from moto.stepfunctions.exceptions import StateMachineDoesNotExist
    from moto.stepfunctions.responses import get_backend

    from local_aws import iam, service_roles

    target_arn = str(target["Arn"])
    account_id, region = target_arn.split(":")[4], target_arn.split(":")[3]
    role_arn = str(target.get("RoleArn") or "")
    if not role_arn:
        raise DeliveryFailed("NO_PERMISSIONS", f"the target {target_arn} has no RoleArn")
    try:
        service_roles.assume_role_for_service(
            role_arn, "events.amazonaws.com", rule_arn, "local-aws-events"
        )
    except iam.AccessDenied as denied:
        raise DeliveryFailed("FAILED_TO_ASSUME_ROLE", f"AccessDenied: {denied}") from None
    try:
        iam.authorize(
            iam.Request(
                principal_arn=role_arn,
                action="states:StartExecution",
                resource=target_arn,
                context={"aws:SecureTransport": "true", "aws:PrincipalArn": role_arn},
            )
        )
    except iam.AccessDenied as denied:
        raise DeliveryFailed("NO_PERMISSIONS", f"AccessDenied: {denied}") from None
    try:
        get_backend(account_id, region).start_execution(
            target_arn, str(uuid.uuid4()), execution_input
        )
    except StateMachineDoesNotExist as missing:
        raise DeliveryFailed("NO_RESOURCE", str(missing)) from None


def send_to_dead_letter_queue(
    queue_arn: str, rule_arn: str, target_arn: str, event: dict[str, Any], failed: DeliveryFailed
) -> bool:
    """Put the undelivered `event` in the queue as EventBridge does; False when the queue
    is missing or its policy does not let events.amazonaws.com send to it for the rule."""
    from moto.sqs.exceptions import QueueDoesNotExist
    from moto.sqs.models import sqs_backends

    from local_aws import iam

    _, _, _, region, account_id, queue_name = queue_arn.split(":", 5)
    backend = sqs_backends[account_id][region]
    try:
        policy = backend.get_queue(queue_name).policy
    except QueueDoesNotExist:
        return False
    request = iam.Request(
        principal_arn="events.amazonaws.com",
        action="sqs:SendMessage",
        resource=queue_arn,
        context={
            "aws:SourceArn": rule_arn,
            "aws:SourceAccount": rule_arn.split(":")[4],
            "aws:SecureTransport": "true",
        },
    )
    if not policy or iam.evaluate([policy], request, resource_policy=True) != iam.Decision.ALLOW:
        print(f"local AWS: EventBridge rule {rule_arn}: may not send to {queue_arn}", flush=True)
        return False
    attributes = {
        "RULE_ARN": rule_arn,
        "TARGET_ARN": target_arn,
        "ERROR_CODE": failed.error_code,
        "ERROR_MESSAGE": str(failed),
    }
    backend.send_message(
        queue_name,
        json.dumps(event, default=str),
        message_attributes={
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    )
    return True


def count_rule_metric(account_id: str, region: str, rule_name: str, metric: str) -> None:
    from moto.cloudwatch.models import cloudwatch_backends

    cloudwatch_backends[account_id][region].put_metric_data(
        namespace="AWS/Events",
        metric_data=[
            {
                "MetricName": metric,
                "Value": 1,
                "Unit": "Count",
                "Dimensions": [{"Name": "RuleName", "Value": rule_name}],
            }
        ],
    )


def patch_state_machine_targets() -> None:
    """Gap: moto's EventBridge rules never start a Step Functions target (see the module)."""
    from moto.events.models import Rule

    send_to_targets = Rule.send_to_targets

    def send_to_targets_and_state_machines(
        self: Rule, original_event: Any, transform_input: bool = True
    ) -> None:
        # A scheduled rule matches no event on AWS; moto's empty pattern matched every S3
        # event, and its unsupported Lambda target then raised out of S3's loop over the
        # rules, so the rules after it (the workflow's trigger) never fired.
        if getattr(self, "scheduled_expression", None):
            return
        original_event = s3_event_as_aws_sends_it(original_event)
        if not self.event_pattern.matches_event(original_event):
            return
        state_machines = [t for t in self.targets if ":states:" in str(t.get("Arn", ""))]
        for target in state_machines:
            execution_input = transform_input_of(self, target, original_event)
            start_execution(self, target, execution_input, dict(original_event))
        others = [t for t in self.targets if t not in state_machines]
        if others:
            rule = copy.copy(self)
            rule.targets = others
            send_to_targets(rule, original_event, transform_input)

    Rule.send_to_targets = send_to_targets_and_state_machines  # type: ignore[method-assign]


def s3_event_as_aws_sends_it(event: Any) -> Any:
    """`event` with an S3 object's `eTag` named `etag`, as AWS's EventBridge event has it (a
    copy: moto hands the same event to every rule)."""
    if not isinstance(event, dict) or event.get("source") != "aws.s3":
        return event
    detail = event.get("detail")
    found = detail.get("object") if isinstance(detail, dict) else None
    if not isinstance(detail, dict) or not isinstance(found, dict) or "eTag" not in found:
        return event
    renamed = {("etag" if name == "eTag" else name): value for name, value in found.items()}
    return {**event, "detail": {**detail, "object": renamed}}


def transform_input_of(rule: Any, target: dict[str, Any], event: Any) -> str:
    return transform_input({**target, "_rule_arn": getattr(rule, "arn", "")}, dict(event))


# PutEvents' limit on the total size of a request's entries (EventBridge User Guide,
# "Calculating PutEvents event entry size"): "must be less than 256KB".
MAX_PUT_EVENTS_BYTES = 256 * 1024


def put_events_entry_size(entry: dict[str, Any]) -> int:
    """An entry's size as EventBridge counts it: Time is 14 bytes; Source, DetailType,
    Detail and each of Resources their UTF-8 bytes."""
    size = 14 if entry.get("Time") is not None else 0
    for name in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(name) or "").encode())
    return size + sum(len(str(r).encode()) for r in entry.get("Resources") or [] if r)


def patch_put_events_size_checked() -> None:
    """Gap: moto's PutEvents accepted entries of any size; AWS refuses the whole request
    with ValidationException when their total reaches 256 KB."""
    from moto.events.exceptions import ValidationException
    from moto.events.models import EventsBackend

    put_events = EventsBackend.put_events

    def put_events_checked(self: EventsBackend, events: list[dict[str, Any]]) -> Any:
        if sum(put_events_entry_size(entry) for entry in events) >= MAX_PUT_EVENTS_BYTES:
            raise ValidationException("Total size of the entries in the request is over the limit.")
        return put_events(self, events)

    EventsBackend.put_events = put_events_checked  # type: ignore[method-assign]
