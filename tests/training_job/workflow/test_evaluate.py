"""`python -m training_job evaluate` runs a deployed workflow on each test image and reports."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest

from training_job.__main__ import main
from training_job.workflow.evaluate import Outcome, predicted_label, summarize

# A one-step workflow with a real handler: the prediction comes from the file's name, and
# the handler stops doubtful images as the threshold filter does.
HANDLER = """
class THRESHOLD_CONFIDENCE_NOT_MET(Exception):
    pass

def handler(event, context):
    key = event["s3_key"]
    inferences = [0.6, 0.4] if "doubt" in key else [0.02, 0.98] if "moto" in key else [0.97, 0.03]
    if max(inferences) < 0.93:
        raise THRESHOLD_CONFIDENCE_NOT_MET("below 0.93")
    return {"statusCode": 200, "body": {**event, "inferences": inferences}}
"""
LST = "0\t0\tbike_1.png\n1\t1\tmoto_2.png\n2\t1\tbike_3.png\n3\t0\tdoubt_4.png\n"
ASSUME = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@pytest.fixture
def deployed(local_aws: dict[str, str], unique_name: str) -> str:
    """A bucket with test.lst and a state machine over one real Lambda; returns the bucket."""
    iam, lambda_ = boto3.client("iam"), boto3.client("lambda")
    role = iam.create_role(RoleName=unique_name, AssumeRolePolicyDocument=json.dumps(ASSUME))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("gate.py", HANDLER)
    function = lambda_.create_function(
        FunctionName=unique_name,
        Runtime="python3.11",
        Role=role["Role"]["Arn"],
        Handler="gate.handler",
        Code={"ZipFile": code.getvalue()},
    )["FunctionArn"]
    definition = {
        "StartAt": "Gate",
        "States": {
            "Gate": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function, "Payload.$": "$"},
                "OutputPath": "$.Payload",
                "End": True,
            }
        },
    }
    # The state machine calls the function with its own role (the local AWS enforces IAM).
    trust = {
        **ASSUME,
        "Statement": [{**ASSUME["Statement"][0], "Principal": {"Service": "states.amazonaws.com"}}],
    }
    machine_role = iam.create_role(
        RoleName=f"{unique_name}-states", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    invoke = {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": function}
    iam.put_role_policy(
        RoleName=f"{unique_name}-states",
        PolicyName="invoke",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [invoke]}),
    )
    boto3.client("stepfunctions").create_state_machine(
        name=unique_name, definition=json.dumps(definition), roleArn=machine_role
    )
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_object(Bucket=unique_name, Key="test.lst", Body=LST.encode())
    return unique_name


# What evaluate reports on the four staged test photos (one below the gate), whichever
# workflow type runs them.
FOUR_PHOTOS_REPORT = {
    "executions": 4,
    "succeeded": 3,
    "failed": 1,
    "failed_by_error": {"THRESHOLD_CONFIDENCE_NOT_MET": 1},
    "gate_accuracy": pytest.approx(2 / 3),
    "stopped_share": 0.25,
}


def test_evaluate_reports_the_gate_and_the_accuracy_behind_it(
    deployed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            "--state-machine",
            deployed,
            "--images",
            f"s3://{deployed}/test/",
            "--labels",
            f"s3://{deployed}/test.lst",
            "--concurrency",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == FOUR_PHOTOS_REPORT
    executions = boto3.client("stepfunctions").list_executions(
        stateMachineArn=f"arn:aws:states:us-east-1:123456789012:stateMachine:{deployed}"
    )["executions"]
    assert len({e["name"] for e in executions}) == 4
    inputs = [
        json.loads(
            boto3.client("stepfunctions").describe_execution(executionArn=e["executionArn"])[
                "input"
            ]
        )
        for e in executions
    ]
    assert sorted(i["s3_key"] for i in inputs) == [
        "test/bike_1.png",
        "test/bike_3.png",
        "test/doubt_4.png",
        "test/moto_2.png",
    ]
    assert all(i["image_data"] == "" and i["inferences"] == [] for i in inputs)


def test_evaluate_runs_an_express_workflow_with_synchronous_starts(
    deployed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same workflow as an EXPRESS state machine: Express keeps no execution history
    ("Execution guarantees", Step Functions developer guide: "Execution history is not
    captured by Step Functions"; DescribeExecution refuses an Express ARN), so evaluate
    runs each image with StartSyncExecution ("Starts a Synchronous Express state machine
    execution", API reference), whose answer holds the status, error and output."""
    sfn = boto3.client("stepfunctions")
    standard = sfn.describe_state_machine(
        stateMachineArn=f"arn:aws:states:us-east-1:123456789012:stateMachine:{deployed}"
    )
    express = sfn.create_state_machine(
        name=f"{deployed}-express",
        definition=standard["definition"],
        roleArn=standard["roleArn"],
        type="EXPRESS",
    )["stateMachineArn"]
    code = main(
        [
            "evaluate",
            "--state-machine",
            f"{deployed}-express",
            "--images",
            f"s3://{deployed}/test/",
            "--labels",
            f"s3://{deployed}/test.lst",
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == FOUR_PHOTOS_REPORT
    with pytest.raises(sfn.exceptions.StateMachineTypeNotSupported):
        sfn.list_executions(stateMachineArn=express)


def test_evaluate_prints_a_readable_report(
    deployed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            "--state-machine",
            deployed,
            "--images",
            f"s3://{deployed}/test",
            "--labels",
            f"s3://{deployed}/test.lst",
            "--limit",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "executions: 2" in out
    assert "passed the gate: 100.0%" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--images", "bucket/test/"], "not an s3:// URI"),
        (["--labels", "s3://BUCKET/"], "expected s3://BUCKET/KEY"),
        (["--labels", "s3://BUCKET/missing.lst"], "cannot read"),
        (["--labels", "s3://BUCKET/bad.lst"], "line 1"),
        (["--labels", "s3://BUCKET/empty.lst"], "lists no images"),
        (["--labels", "s3://BUCKET/binary.lst"], "can't decode"),
        (["--state-machine", "no-such-machine"], "no state machine named"),
        # Numbers out of range are refused by the parser (tests/training_job/test_arguments.py).
        (["--state-machine", "arn:aws:states:REGION:123456789012:stateMachine:gone"], "gone"),
        (["--images", "s3://" + "b" * 100_000 + "/test/"], "bbbb"),
    ],
)
def test_evaluate_refuses_bad_input_with_a_specific_error(
    deployed: str, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=deployed, Key="bad.lst", Body=b"0\t0\t../../etc/passwd\n")
    s3.put_object(Bucket=deployed, Key="empty.lst", Body=b"")
    s3.put_object(Bucket=deployed, Key="binary.lst", Body=b"\xff\xfe\x00")
    base = {
        "--state-machine": deployed,
        "--images": f"s3://{deployed}/test/",
        "--labels": f"s3://{deployed}/test.lst",
    }
    region = boto3.session.Session().region_name
    options = dict(
        zip(
            arguments[::2],
            (a.replace("BUCKET", deployed).replace("REGION", region) for a in arguments[1::2]),
            strict=True,
        )
    )
    argv = ["evaluate"]
    for name, value in {**base, **options}.items():
        argv += [name, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err) < 1000  # arguments of any length are shown bounded
    executions = boto3.client("stepfunctions").list_executions(
        stateMachineArn=f"arn:aws:states:us-east-1:123456789012:stateMachine:{deployed}"
    )["executions"]
    assert executions == []  # nothing started on bad input


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ('{"statusCode": 200, "body": {"inferences": [0.1, 0.9]}}', 1),
        ('{"inferences": [0.8, 0.2]}', 0),
        ('{"statusCode": 200, "body": "{\\"inferences\\": [0.3, 0.7]}"}', 1),
        ('{"body": {"inferences": []}}', None),
        ('{"body": {"inferences": ["a", "b"]}}', None),
        ('{"body": {"inferences": [true, false]}}', None),
        ("not json", None),
        ("[1, 2]", None),
        ("", None),
        (None, None),
    ],
)
def test_predictions_are_read_from_wrapped_flat_and_hostile_outputs(
    output: str | None, label: int | None
) -> None:
    assert predicted_label(output) == label


def test_summarize_of_nothing_has_no_ratios() -> None:
    assert summarize([]) == {
        "executions": 0,
        "succeeded": 0,
        "failed": 0,
        "failed_by_error": {},
        "gate_accuracy": None,
        "stopped_share": None,
    }
    timed_out = summarize([Outcome("k", 0, "TIMED_OUT")])
    assert timed_out["failed_by_error"] == {"TIMED_OUT": 1}
