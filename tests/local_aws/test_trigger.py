"""An image uploaded under incoming/ starts exactly one execution, with the workflow event."""

from __future__ import annotations

import json
import time
from pathlib import Path

from local_aws.events import transform_input
from tests.local_aws.conftest import IMAGES_BUCKET, LocalAws, wait_for_execution


def executions_for(local: LocalAws, keys: set[str]) -> list[dict[str, object]]:
    sfn = local.client("stepfunctions")
    machines = sfn.list_state_machines()["stateMachines"]
    arn = next(m["stateMachineArn"] for m in machines if m["name"] == "ImageWorkflow-local")
    found = []
    for execution in sfn.list_executions(stateMachineArn=arn)["executions"]:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if json.loads(described["input"]).get("s3_key") in keys:
            found.append(described)
    return found


def test_each_upload_under_incoming_starts_exactly_one_execution(
    deployed_project: Path, workflow_aws: LocalAws, unique_name: str
) -> None:
    s3 = workflow_aws.client("s3")
    wanted = {f"incoming/{unique_name}-{n}.png" for n in range(3)}
    ignored = {f"other/{unique_name}.png", f"{unique_name}-incoming/x.png"}
    for key in sorted(wanted | ignored):
        s3.put_object(Bucket=IMAGES_BUCKET, Key=key, Body=b"xx")
    deadline = time.monotonic() + 30
    while len(executions_for(workflow_aws, wanted)) < len(wanted):
        assert time.monotonic() < deadline, "the uploads did not start their executions"
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate would have started by now
    started = executions_for(workflow_aws, wanted | ignored)
    assert sorted(json.loads(str(e["input"]))["s3_key"] for e in started) == sorted(wanted)
    sfn = workflow_aws.client("stepfunctions")
    for execution in started:
        event = json.loads(str(execution["input"]))
        assert event == {
            "image_data": "",
            "s3_bucket": IMAGES_BUCKET,
            "s3_key": event["s3_key"],
            "inferences": [],
        }
        assert wait_for_execution(sfn, str(execution["executionArn"]))["status"] == "SUCCEEDED"


def test_a_scheduled_rule_beside_the_trigger_neither_matches_uploads_nor_blocks_them(
    deployed_project: Path, workflow_aws: LocalAws, unique_name: str
) -> None:
    events = workflow_aws.client("events")
    rule = f"hourly-{unique_name}"
    events.put_rule(Name=rule, ScheduleExpression="rate(1 hour)")
    events.put_targets(
        Rule=rule,
        Targets=[{"Id": "monitor", "Arn": "arn:aws:lambda:us-east-1:123456789012:function:m"}],
    )
    try:
        key = f"incoming/{unique_name}.png"
        workflow_aws.client("s3").put_object(Bucket=IMAGES_BUCKET, Key=key, Body=b"xx")
        deadline = time.monotonic() + 30
        while not executions_for(workflow_aws, {key}):
            assert time.monotonic() < deadline, "the scheduled rule kept the upload from starting"
            time.sleep(0.2)
        time.sleep(1.0)
        assert len(executions_for(workflow_aws, {key})) == 1
    finally:
        events.remove_targets(Rule=rule, Ids=["monitor"])
        events.delete_rule(Name=rule)


def test_the_input_transformer_quotes_strings_outside_quotes_and_escapes_inside() -> None:
    event = {"detail": {"bucket": {"name": "b"}, "object": {"key": 'in "q".png'}}}
    paths = {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"}
    bare = transform_input(
        {
            "InputTransformer": {
                "InputPathsMap": paths,
                "InputTemplate": '{"s3_bucket": <bucket>, "s3_key": <key>}',
            }
        },
        event,
    )
    quoted = transform_input(
        {
            "InputTransformer": {
                "InputPathsMap": paths,
                "InputTemplate": '{"s3_bucket": "<bucket>", "s3_key": "<key>"}',
            }
        },
        event,
    )
    expected = {"s3_bucket": "b", "s3_key": 'in "q".png'}
    assert json.loads(bare) == expected
    assert json.loads(quoted) == expected
    assert json.loads(transform_input({}, event)) == event
    assert transform_input({"Input": '{"fixed": 1}'}, event) == '{"fixed": 1}'
    assert json.loads(transform_input({"InputPath": "$.detail.bucket"}, event)) == {"name": "b"}
