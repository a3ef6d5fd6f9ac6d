"""An image uploaded under incoming/ starts exactly one execution, with the workflow event."""

from __future__ import annotations

import hashlib
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


def wait_for_executions(local: LocalAws, keys: set[str]) -> list[dict[str, object]]:
    """The executions of `keys` once each key has at least one; fails after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        found = executions_for(local, keys)
        if {json.loads(str(e["input"]))["s3_key"] for e in found} == keys:
            return found
        assert time.monotonic() < deadline, f"no execution started for some of {sorted(keys)}"
        time.sleep(0.2)


def upload_marker_and_wait(local: LocalAws, unique_name: str) -> None:
    """Upload one more image under incoming/ and wait for its execution: uploads notify in
    order (the local S3 sends each event before it answers the PUT), so once the marker's
    execution exists, every execution an earlier upload started exists too. What must not
    happen is then checked after a positive signal, not after a sleep."""
    marker = f"incoming/{unique_name}-marker.png"
    local.client("s3").put_object(Bucket=IMAGES_BUCKET, Key=marker, Body=b"xx")
    wait_for_executions(local, {marker})


def test_each_upload_under_incoming_starts_exactly_one_execution(
    deployed_project: Path, workflow_aws: LocalAws, unique_name: str
) -> None:
    s3 = workflow_aws.client("s3")
    wanted = {f"incoming/{unique_name}-{n}.png" for n in range(3)}
    ignored = {f"other/{unique_name}.png", f"{unique_name}-incoming/x.png"}
    for key in sorted(wanted | ignored):
        s3.put_object(Bucket=IMAGES_BUCKET, Key=key, Body=b"xx")
    wait_for_executions(workflow_aws, wanted)
    upload_marker_and_wait(workflow_aws, unique_name)
    started = executions_for(workflow_aws, wanted | ignored)
    assert sorted(json.loads(str(e["input"]))["s3_key"] for e in started) == sorted(wanted)
    sfn = workflow_aws.client("stepfunctions")
    for execution in started:
        event = json.loads(str(execution["input"]))
        # The upload's ETag comes with it (the S3 EventBridge event's detail.object.etag):
        # the decision's id names the upload, not only its key (issue 21, item 6).
        assert event == {
            "image_data": "",
            "s3_bucket": IMAGES_BUCKET,
            "s3_key": event["s3_key"],
            "s3_etag": hashlib.md5(b"xx").hexdigest(),
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
        wait_for_executions(workflow_aws, {key})  # the scheduled rule did not block it
        upload_marker_and_wait(workflow_aws, unique_name)
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
