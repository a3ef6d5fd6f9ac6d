"""The Distributed Map subset the backfill uses, run by the local AWS as AWS runs it
(local_aws/distributed_map.py): every page of the S3 listing, batches, the failure
thresholds, ResultWriter's files, and AWS's error names.

AWS's rules relied on (Step Functions developer guide):
- "ItemReader (Map)": with `arn:aws:states:::s3:listObjectsV2` each item is one object,
  `{"Etag", "Key", "LastModified", "Size", "StorageClass"}`, over the whole prefix.
- "ItemBatcher (Map)": a child gets `{"Items": [...], "BatchInput": {...}}`, at most
  MaxItemsPerBatch items and MaxInputBytesPerBatch bytes (at most 256 KiB).
- "Setting failure thresholds for Distributed Map states": the map run fails with
  `States.ExceedToleratedFailureThreshold` once more items failed than tolerated (0 by
  default).
- "ResultWriter (Map)": results go to `<Prefix>/<map run id>/` as manifest.json and
  SUCCEEDED_n.json / FAILED_n.json / PENDING_n.json.
- "Error names": `States.ItemReaderFailed`, `States.ResultWriterFailed`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.local_aws.conftest import LocalAws, wait_for_execution

TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "states.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def map_machine(
    local: LocalAws,
    name: str,
    bucket: str,
    *,
    batcher: dict[str, Any] | None = None,
    tolerated: dict[str, Any] | None = None,
    results_bucket: str | None = None,
    fail_batch_of: int = -1,
    list_allowed: bool = True,
    children_allowed: bool = True,
) -> str:
    """A Distributed Map over s3://bucket/in/ whose child passes its batch through (or
    fails when it holds `fail_batch_of` items), results to results/."""
    child = {
        "StartAt": "Count",
        "States": {
            "Count": {
                "Type": "Pass",
                "Parameters": {"Items.$": "$.Items", "count.$": "States.ArrayLength($.Items)"},
                "Next": "Check",
            },
            "Check": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.count", "NumericEquals": fail_batch_of, "Next": "Broken"}
                ],
                "Default": "Done",
            },
            "Broken": {"Type": "Fail", "Error": "PhotoBroken", "Cause": "a test failure"},
            "Done": {"Type": "Pass", "End": True},
        },
        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
    }
    state: dict[str, Any] = {
        "Type": "Map",
        "ItemReader": {
            "Resource": "arn:aws:states:::s3:listObjectsV2",
            "Parameters": {"Bucket.$": "$.bucket", "Prefix": "in/"},
        },
        "ItemBatcher": {"MaxItemsPerBatch": 100} if batcher is None else batcher,
        "MaxConcurrency": 4,
        "ItemProcessor": child,
        "ResultWriter": {
            "Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket": results_bucket or bucket, "Prefix": "results"},
        },
        "End": True,
        **(tolerated or {}),
    }
    iam = local.client("iam")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    machine = f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}"
    statements = [
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"},
        {
            "Effect": "Allow",
            "Action": "states:StartExecution",
            "Resource": machine if children_allowed else f"{machine}-other",
        },
        {
            "Effect": "Allow",
            "Action": ["states:DescribeExecution", "states:StopExecution"],
            "Resource": f"arn:aws:states:us-east-1:123456789012:execution:{name}/*",
        },
    ]
    if list_allowed:
        statements.append(
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}
        )
    iam.put_role_policy(
        RoleName=name,
        PolicyName="map",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    created = local.client("stepfunctions").create_state_machine(
        name=name,
        definition=json.dumps({"StartAt": "Map", "States": {"Map": state}}),
        roleArn=role["Role"]["Arn"],
    )
    arn: str = created["stateMachineArn"]
    return arn


def photos(local: LocalAws, bucket: str, count: int) -> None:
    s3 = local.client("s3")
    s3.create_bucket(Bucket=bucket)
    for index in range(count):
        s3.put_object(Bucket=bucket, Key=f"in/{index:05d}.jpg", Body=b"x" * (index % 7))


def run(local: LocalAws, machine: str, bucket: str) -> dict[str, Any]:
    sfn = local.client("stepfunctions")
    started = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"bucket": bucket}))
    return wait_for_execution(sfn, started["executionArn"], timeout=240)


def exported(local: LocalAws, bucket: str, manifest_key: str) -> dict[str, list[Any]]:
    s3 = local.client("s3")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    return {
        status: [
            record
            for file in files
            for record in json.loads(s3.get_object(Bucket=bucket, Key=file["Key"])["Body"].read())
        ]
        for status, files in manifest["ResultFiles"].items()
    }


def test_every_page_of_the_listing_is_batched_and_exported_once(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    """Over 1,000 objects (ListObjectsV2's page), batches of at most 100 items."""
    photos(workflow_aws, unique_name, 1003)
    described = run(workflow_aws, map_machine(workflow_aws, unique_name, unique_name), unique_name)
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["ResultWriterDetails"]["Key"].startswith("results/")
    results = exported(workflow_aws, unique_name, output["ResultWriterDetails"]["Key"])
    assert results["FAILED"] == results["PENDING"] == []
    batches = [json.loads(record["Output"]) for record in results["SUCCEEDED"]]
    assert len(batches) == 11 and max(len(b["Items"]) for b in batches) == 100
    keys = sorted(item["Key"] for batch in batches for item in batch["Items"])
    assert keys == [f"in/{index:05d}.jpg" for index in range(1003)]
    item = batches[0]["Items"][0]
    assert set(item) == {"Etag", "Key", "LastModified", "Size", "StorageClass"}
    assert item["Etag"].startswith('"') and isinstance(item["LastModified"], int)


def test_a_batch_holds_at_most_max_input_bytes(workflow_aws: LocalAws, unique_name: str) -> None:
    photos(workflow_aws, unique_name, 30)
    machine = map_machine(
        workflow_aws, unique_name, unique_name, batcher={"MaxInputBytesPerBatch": 1024}
    )
    described = run(workflow_aws, machine, unique_name)
    assert described["status"] == "SUCCEEDED", described
    key = json.loads(described["output"])["ResultWriterDetails"]["Key"]
    inputs = [record["Input"] for record in exported(workflow_aws, unique_name, key)["SUCCEEDED"]]
    assert len(inputs) > 1
    assert all(len(text.encode()) <= 1024 for text in inputs)
    assert sum(len(json.loads(text)["Items"]) for text in inputs) == 30


def test_a_failed_child_fails_the_map_past_no_tolerance_and_is_exported(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    photos(workflow_aws, unique_name, 23)  # batches of 5, 5, 5, 5 and 3: the last fails
    machine = map_machine(
        workflow_aws, unique_name, unique_name,
        batcher={"MaxItemsPerBatch": 5}, fail_batch_of=3,
    )  # fmt: skip
    described = run(workflow_aws, machine, unique_name)
    assert described["status"] == "FAILED"
    assert described["error"] == "States.ExceedToleratedFailureThreshold"
    run_files = workflow_aws.client("s3").list_objects_v2(Bucket=unique_name, Prefix="results/")
    manifest = next(o["Key"] for o in run_files["Contents"] if o["Key"].endswith("manifest.json"))
    failed = exported(workflow_aws, unique_name, manifest)["FAILED"]
    assert [record["Error"] for record in failed] == ["PhotoBroken"]
    assert [i["Key"] for i in json.loads(failed[0]["Input"])["Items"]] == [
        "in/00020.jpg",
        "in/00021.jpg",
        "in/00022.jpg",
    ]


def test_failures_within_the_tolerated_percentage_leave_the_map_succeeded(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    photos(workflow_aws, unique_name, 23)  # batches of 5, 5, 5, 5 and 3: the last fails
    machine = map_machine(
        workflow_aws, unique_name, unique_name,
        batcher={"MaxItemsPerBatch": 5}, fail_batch_of=3,
        tolerated={"ToleratedFailurePercentage": 20},
    )  # fmt: skip
    described = run(workflow_aws, machine, unique_name)
    assert described["status"] == "SUCCEEDED", described
    key = json.loads(described["output"])["ResultWriterDetails"]["Key"]
    results = exported(workflow_aws, unique_name, key)
    assert len(results["FAILED"]) == 1 and len(results["SUCCEEDED"]) == 4


def test_a_listing_the_role_may_not_make_fails_with_item_reader_failed(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    photos(workflow_aws, unique_name, 3)
    machine = map_machine(workflow_aws, unique_name, unique_name, list_allowed=False)
    described = run(workflow_aws, machine, unique_name)
    assert described["status"] == "FAILED"
    assert described["error"] == "States.ItemReaderFailed"


def test_results_the_role_may_not_write_fail_with_result_writer_failed(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    photos(workflow_aws, unique_name, 3)
    machine = map_machine(
        workflow_aws, unique_name, unique_name, results_bucket=f"{unique_name}-elsewhere"
    )
    described = run(workflow_aws, machine, unique_name)
    assert described["status"] == "FAILED"
    assert described["error"] == "States.ResultWriterFailed"


def test_a_role_that_may_not_start_its_children_fails_the_map(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    """ "IAM policies for running Distributed Map states": the state machine's role needs
    states:StartExecution on the state machine itself to start the child executions."""
    photos(workflow_aws, unique_name, 3)
    machine = map_machine(workflow_aws, unique_name, unique_name, children_allowed=False)
    described = run(workflow_aws, machine, unique_name)
    assert described["status"] == "FAILED"
    assert "states:StartExecution" in described["cause"]


@pytest.mark.parametrize(
    "batcher",
    [{}, {"MaxInputBytesPerBatch": 256 * 1024 + 1}, {"MaxItemsPerBatch": 0}],
    ids=["empty", "over-256-kib", "zero-items"],
)
def test_an_item_batcher_aws_refuses_is_an_invalid_definition(
    workflow_aws: LocalAws, unique_name: str, batcher: dict[str, Any]
) -> None:
    workflow_aws.client("s3").create_bucket(Bucket=unique_name)
    with pytest.raises(ClientError) as refused:
        map_machine(workflow_aws, unique_name, unique_name, batcher=batcher)
    assert refused.value.response["Error"]["Code"] == "InvalidDefinition"
