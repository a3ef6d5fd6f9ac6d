"""Every IAM statement of the workflow's roles is needed: without it, the local AWS refuses.

The real `serverless.yml` is rendered once (`sls package --stage local`); its functions are
created in the local AWS from the packaged zips, its state machine from the rendered
definition, its decisions table from the rendered table, its EventBridge rule from the
rendered pattern and target. For each statement
of each role (those in `resources/iam.yml` and those serverless-step-functions generates), the
role is created without that one statement and the part of the workflow that acts with it
runs: it must fail with AccessDenied. With the whole role it must succeed.

Statements for CloudWatch Logs (logs:CreateLogStream, logs:PutLogEvents) and X-Ray are
not parametrised: the local Lambda executor writes handler logs to the server's stderr,
not to CloudWatch Logs, and nothing traces, so nothing in local mode exercises them
(docs/local-mode.md lists them as not enforced).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.baselines import known_baseline
from tests.local_aws.rendered_workflow import (
    IMAGE_KEY,
    REGION,
    Workflow,
    listed_statements,
    statement_actions,
)
from tests.serverless_config import merged_resources
from tests.statemachine.packaging import ACCOUNT_ID

pytestmark = pytest.mark.timeout(600)

CONFIDENT = [0.97, 0.03]
GATE = "THRESHOLD_CONFIDENCE_NOT_MET"  # a doubtful image: an outcome, not an access error
# The statements the step-functions plugin adds to the template (not in serverless.yml).
PLUGIN_STATEMENTS = [("ImageWorkflowEventToStepFunctionsRole", "states:StartExecution")]
# Services whose calls local mode never makes (see the module's docstring).
UNEXERCISED = ("logs:", "xray:")


def _exercised(statement: dict[str, Any]) -> bool:
    return not all(action.startswith(UNEXERCISED) for action in statement_actions(statement))


def _statements(resources: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, its actions) of each statement that local mode exercises."""
    found = []
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            found += [
                (name, ",".join(statement_actions(s)))
                for s in listed_statements(policy)
                if _exercised(s)
            ]
    return found


# Read at collection, without the Serverless CLI: the statements written in resources/iam.yml.
DECLARED = _statements(merged_resources()["Resources"])
PARAMETERS = [
    pytest.param(role, actions, id=f"{role}-{actions}")
    for role, actions in DECLARED + PLUGIN_STATEMENTS
]


# --- the rendered template, made concrete -----------------------------------------------


# --- what each role does, run for real ----------------------------------------------------


def _invoke(workflow: Workflow, role_id: str, event: dict[str, Any]) -> str:
    """'ok', or the function's error as Lambda reports it."""
    response = workflow.aws.client("lambda").invoke(
        FunctionName=workflow.functions[role_id], Payload=json.dumps(event).encode()
    )
    payload = response["Payload"].read().decode()
    return f"{response['FunctionError']}: {payload}" if "FunctionError" in response else "ok"


def _event(workflow: Workflow, **fields: Any) -> dict[str, Any]:
    return {
        "image_data": "",
        "s3_bucket": workflow.bucket,
        "s3_key": IMAGE_KEY,
        "inferences": [],
        **fields,
    }


def _serialize(workflow: Workflow, role: str) -> str:
    workflow.use_roles(SerializeRole=role)
    return _invoke(workflow, "SerializeRole", _event(workflow))


def _classify(workflow: Workflow, role: str) -> str:
    """classify as it runs after serialize left the image in S3: it reads the image by the
    event's reference (s3:GetObject), then calls the endpoint (sagemaker:InvokeEndpoint)."""
    workflow.use_roles(ClassifyRole=role)
    return _invoke(workflow, "ClassifyRole", _event(workflow))


def _monitor(workflow: Workflow, role: str, first_run: bool = False) -> str:
    """One run over one capture object: it lists and reads captures and the baseline,
    publishes metrics and writes its position (unless `first_run`, the state object
    exists already)."""
    workflow.use_roles(MonitorRole=role)
    s3 = workflow.aws.client("s3")
    variables = workflow.environments["MonitorRole"]
    s3.put_object(Bucket=workflow.bucket, Key=variables["BASELINE_KEY"], Body=known_baseline())
    prefix = f"{variables['CAPTURE_PREFIX']}AllTraffic/"
    record = {
        "captureData": {
            "endpointOutput": {
                "data": json.dumps(CONFIDENT),
                "encoding": "JSON",
                "mode": "OUTPUT",
                "observedContentType": "application/json",
            }
        }
    }
    s3.put_object(
        Bucket=workflow.bucket,
        Key=f"{prefix}{uuid.uuid4().hex}.jsonl",
        Body=(json.dumps(record) + "\n").encode(),
    )
    state_key = variables.get("STATE_KEY", f"monitoring/{variables['ENDPOINT_NAME']}.json")
    if first_run:
        s3.delete_object(Bucket=workflow.bucket, Key=state_key)
    else:
        s3.put_object(
            Bucket=workflow.bucket, Key=state_key, Body=json.dumps({"last_key": ""}).encode()
        )
    return _invoke(workflow, "MonitorRole", {})


def _review_monitor(workflow: Workflow, role: str) -> str:
    """One run: it counts the review queue, reads the audit answers (both by index Query)
    and publishes its metrics."""
    workflow.use_roles(ReviewMonitorRole=role)
    return _invoke(workflow, "ReviewMonitorRole", {})


def _publish_decisions(workflow: Workflow, role: str) -> str:
    """One sweep of the outbox over a routed decision whose event is still pending: it
    queries the outbox index, puts the event and clears the mark."""
    workflow.use_roles(PublishDecisionsRole=role)
    table = workflow.environments["PublishDecisionsRole"]["DECISIONS_TABLE"]
    image = f"s3://{workflow.bucket}/incoming/{uuid.uuid4().hex}.png"
    item = {
        "image": image,
        "label": "bicycle",
        "decided_at": "2020-01-01T00:00:00.000+00:00",  # long settled
        "execution": f"arn:aws:states:{REGION}:{ACCOUNT_ID}:execution:m:{uuid.uuid4().hex}",
        "status": "routed",
        "source": "model",
        "event_pending": "pending",
    }
    workflow.aws.client("dynamodb").put_item(
        TableName=table, Item={name: {"S": value} for name, value in item.items()}
    )
    return _invoke(workflow, "PublishDecisionsRole", {})


def _wait_for_execution(workflow: Workflow, arn: str) -> dict[str, Any]:
    sfn = workflow.aws.client("stepfunctions")
    deadline = time.monotonic() + 120
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{arn} still running"
        time.sleep(0.2)
    return dict(described)


def _outcome(workflow: Workflow, execution: dict[str, Any]) -> str:
    """'ok' when the execution ran through (passed or stopped at the gate), else its errors."""
    if execution["status"] == "SUCCEEDED" or execution.get("error") == GATE:
        return "ok"
    history = workflow.aws.client("stepfunctions").get_execution_history(
        executionArn=execution["executionArn"]
    )["events"]
    failures = [e["taskFailedEventDetails"] for e in history if e["type"] == "TaskFailed"]
    return f"{execution['status']}: " + "; ".join(f"{f['error']}: {f['cause']}" for f in failures)


def _state_machine(workflow: Workflow, role: str) -> str:
    """A confident photo through the whole workflow: the three handlers, its decision
    recorded and its event put. A photo of its own each time: a photo decided already would
    end in AlreadyDecided without putting an event."""
    workflow.use_roles(ImageWorkflowRole=role)
    key = f"test/iam-{uuid.uuid4().hex}.png"
    workflow.aws.client("s3").copy_object(
        Bucket=workflow.bucket, Key=key, CopySource={"Bucket": workflow.bucket, "Key": IMAGE_KEY}
    )
    arn = workflow.aws.client("stepfunctions").start_execution(
        stateMachineArn=workflow.machine_arn, input=json.dumps(_event(workflow, s3_key=key))
    )["executionArn"]
    return _outcome(workflow, _wait_for_execution(workflow, arn))


def _trigger(workflow: Workflow, role: str) -> str:
    """An upload under incoming/ through the rendered rule (its name, pattern and target),
    with `role` as the target's."""
    workflow.use_roles()
    [rule] = [
        workflow.rendered.resolve(resource["Properties"])
        for resource in workflow.rendered.resources.values()
        if resource["Type"] == "AWS::Events::Rule" and "EventPattern" in resource["Properties"]
    ]
    name = rule.get("Name") or f"iam-{uuid.uuid4().hex[:8]}"
    dead_letters = _dead_letter_queue(workflow)
    events = workflow.aws.client("events")
    events.put_rule(Name=name, EventPattern=json.dumps(rule["EventPattern"]), State="ENABLED")
    [target] = rule["Targets"]
    events.put_targets(Rule=name, Targets=[{**target, "RoleArn": role}])
    key = f"incoming/{uuid.uuid4().hex}.png"
    try:
        workflow.aws.client("s3").copy_object(
            Bucket=workflow.bucket,
            Key=key,
            CopySource={"Bucket": workflow.bucket, "Key": IMAGE_KEY},
        )
        outcome = _trigger_outcome(workflow, name, role, key)
        if outcome != "ok":  # a refused upload is kept in the rendered dead-letter queue
            assert key in _dead_letter_keys(workflow, dead_letters), outcome
        return outcome
    finally:
        events.remove_targets(Rule=name, Ids=[target["Id"]])
        events.delete_rule(Name=name)


def _dead_letter_queue(workflow: Workflow) -> str:
    """The trigger's dead-letter queue, made as rendered, with its rendered policy; its URL."""
    resources = workflow.rendered.resources
    [queue] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SQS::Queue"]
    [policy] = [
        workflow.rendered.resolve(r["Properties"]["PolicyDocument"])
        for r in resources.values()
        if r["Type"] == "AWS::SQS::QueuePolicy"
    ]
    sqs = workflow.aws.client("sqs")
    url: str = sqs.create_queue(QueueName=queue["QueueName"])["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return url


def _dead_letter_keys(workflow: Workflow, url: str) -> list[str]:
    messages = (
        workflow.aws.client("sqs")
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        .get("Messages", [])
    )
    return [json.loads(m["Body"])["detail"]["object"]["key"] for m in messages]


def _trigger_outcome(workflow: Workflow, rule: str, role: str, key: str) -> str:
    """Wait for either signal: an execution for `key`, or the rule's refused invocation
    with `role` (the server's log; EventBridge's FailedInvocations metric counts it)."""
    sfn = workflow.aws.client("stepfunctions")
    cloudwatch = workflow.aws.client("cloudwatch")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for item in sfn.list_executions(stateMachineArn=workflow.machine_arn)["executions"]:
            described = sfn.describe_execution(executionArn=item["executionArn"])
            if json.loads(described["input"]).get("s3_key") == key:
                return _outcome(workflow, _wait_for_execution(workflow, item["executionArn"]))
        refusals = [
            line
            for line in workflow.aws.log.read_text().splitlines()
            if f"rule/{rule}:" in line and role in line
        ]
        if refusals:
            failed = cloudwatch.list_metrics(
                Namespace="AWS/Events",
                MetricName="FailedInvocations",
                Dimensions=[{"Name": "RuleName", "Value": rule}],
            )["Metrics"]
            assert failed, "a refused invocation is not counted in FailedInvocations"
            return "FailedInvocations: " + " ".join(refusals)
        time.sleep(0.2)
    raise AssertionError(f"the upload of {key} neither started an execution nor failed")


def _backfill_batch(workflow: Workflow, role: str) -> str:
    """One batch of a backfill, one photo not decided before: the scorer reads which
    photos are decided (BatchGetItem), reads the photo, calls the endpoint and writes its
    decision."""
    workflow.use_roles(BackfillRole=role)
    s3 = workflow.aws.client("s3")
    key = f"archive/iam-{uuid.uuid4().hex}.png"
    s3.copy_object(
        Bucket=workflow.bucket, Key=key, CopySource={"Bucket": workflow.bucket, "Key": IMAGE_KEY}
    )
    etag = s3.head_object(Bucket=workflow.bucket, Key=key)["ETag"]
    execution = f"arn:aws:states:{REGION}:{ACCOUNT_ID}:execution:iam:{uuid.uuid4().hex}"
    batch = {
        "Items": [{"Key": key, "Etag": etag}],
        "BatchInput": {
            "bucket": workflow.bucket,
            "backfill": "iam",
            "execution": execution,
            "target_variant": "",
            "redecide": False,
        },
    }
    response = workflow.aws.client("lambda").invoke(
        FunctionName=workflow.functions["BackfillRole"], Payload=json.dumps(batch).encode()
    )
    payload = response["Payload"].read().decode()
    if "FunctionError" in response:
        return f"{response['FunctionError']}: {payload}"
    outcomes = [photo["outcome"] for photo in json.loads(payload)["photos"]]
    return "ok" if outcomes == ["routed"] else payload


def _backfill_workflow(workflow: Workflow, role: str) -> str:
    """A backfill of a prefix holding one photo: the map lists it, starts its child,
    invokes the scorer and exports the results."""
    workflow.use_roles()
    sfn = workflow.aws.client("stepfunctions")
    sfn.update_state_machine(stateMachineArn=workflow.backfill_arn, roleArn=role)
    prefix = f"archive/iam-{uuid.uuid4().hex}/"
    workflow.aws.client("s3").copy_object(
        Bucket=workflow.bucket,
        Key=f"{prefix}photo.png",
        CopySource={"Bucket": workflow.bucket, "Key": IMAGE_KEY},
    )
    arn = sfn.start_execution(
        stateMachineArn=workflow.backfill_arn,
        input=json.dumps({"prefix": prefix, "target_variant": "", "redecide": False}),
    )["executionArn"]
    described = _wait_for_execution(workflow, arn)
    if described["status"] == "SUCCEEDED":
        return "ok"
    return f"{described['status']}: {described.get('error')}: {described.get('cause')}"


SCENARIOS: dict[str, Callable[[Workflow, str], str]] = {
    "SerializeRole": _serialize,
    "ClassifyRole": _classify,
    "MonitorRole": _monitor,
    "ReviewMonitorRole": _review_monitor,
    "PublishDecisionsRole": _publish_decisions,
    "ImageWorkflowRole": _state_machine,
    "ImageWorkflowEventToStepFunctionsRole": _trigger,
    "BackfillRole": _backfill_batch,
    "BackfillWorkflowRole": _backfill_workflow,
}


# --- the tests ----------------------------------------------------------------------------


def test_every_statement_that_local_mode_exercises_is_parametrised(workflow: Workflow) -> None:
    rendered = _statements(workflow.rendered.resources)
    assert sorted(rendered) == sorted(DECLARED + PLUGIN_STATEMENTS)
    assert {role for role, _ in rendered} <= set(SCENARIOS)


@pytest.mark.parametrize("role_id", sorted(SCENARIOS))
def test_each_part_succeeds_with_its_whole_role(workflow: Workflow, role_id: str) -> None:
    assert SCENARIOS[role_id](workflow, workflow.whole_roles[role_id]) == "ok"


def test_the_monitors_first_run_works_under_its_role(workflow: Workflow) -> None:
    """No state object yet: under MonitorRole (ListBucket only for some prefixes) S3 answers
    a GetObject of it AccessDenied, not NoSuchKey, so the monitor must not make one."""
    assert _monitor(workflow, workflow.whole_roles["MonitorRole"], first_run=True) == "ok"


@pytest.mark.parametrize(("role_id", "actions"), PARAMETERS)
def test_without_any_one_statement_the_part_fails_with_access_denied(
    workflow: Workflow, role_id: str, actions: str
) -> None:
    role = workflow.create_role(role_id, without=actions)
    outcome = SCENARIOS[role_id](workflow, role)
    assert outcome != "ok"
    # The refusal is the local AWS's, for this role and one of the statement's actions
    # (the handler reports a 403 as ImageNotFound: the server's log names the action).
    refusals = re.findall(
        rf"AccessDenied: User: {re.escape(role)} is not authorized to perform: (\S+)",
        workflow.aws.log.read_text(),
    )
    assert set(refusals) & set(actions.split(",")), (outcome, refusals)
