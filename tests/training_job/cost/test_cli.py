"""`python -m training_job cost`: dollars per million photos, per service.

The hand-computed cases price a small configuration with round numbers against the dated
price file (training_job/cost/prices-us-east-1.json); the last test reads real execution
histories from the local AWS. Pricing rules relied on:
- Step Functions (aws.amazon.com/step-functions/pricing): Standard workflows are charged
  $0.025 per 1,000 state transitions in us-east-1, "including retries": each retry is an
  additional transition.
- Lambda (aws.amazon.com/lambda/pricing): per request and per GB-second of duration
  (MemorySize x duration rounded up to the millisecond).
- SageMaker real-time inference: per instance-hour, for every hour an instance runs.
- DynamoDB on-demand: one write request unit per 1 KB of item, and writes to each global
  secondary index the item lands in (a sparse index only for items with its keys).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

import boto3
import pytest

from training_job.__main__ import main
from training_job.cost.model import (
    DEFAULT_PRICES,
    Endpoint,
    Prices,
    PricesError,
    Usage,
    cost_per_million,
)
from training_job.serving.autoscaling import DEFAULT_TARGET_INVOCATIONS_PER_MINUTE

PRICES = Prices.read(DEFAULT_PRICES)
ONE_GB_A_MILLION = 1024**3 / 1_000_000  # log bytes a photo that make 1 GB a million photos


def usage(photos: float, endpoint: tuple[Endpoint, ...]) -> Usage:
    return Usage(
        photos_per_month=photos,
        state_transitions=6,
        lambda_requests=3,
        lambda_gb_seconds=0.15,  # 3 x 256 MB x 200 ms
        dynamodb_write_units=2,
        custom_events=1,
        s3_gets=1,
        s3_puts=1.1,
        log_bytes=ONE_GB_A_MILLION,
        endpoint=endpoint,
        alarms=20,
        custom_metrics=10,
    )


def by_service(photos: float, endpoint: tuple[Endpoint, ...]) -> dict[str, float]:
    return {
        line.service: line.per_million for line in cost_per_million(usage(photos, endpoint), PRICES)
    }


def test_a_million_photos_a_month_costs_each_service_as_computed_by_hand() -> None:
    """1M photos/month, one ml.m5.xlarge (22.8 photos/min is far under the 9,540 target)."""
    endpoint = (Endpoint("ml.m5.xlarge", 1, 4, DEFAULT_TARGET_INVOCATIONS_PER_MINUTE),)
    costs = by_service(1_000_000, endpoint)
    assert costs == pytest.approx(
        {
            "Step Functions": 6 * 0.025 * 1000,  # 6M transitions at $0.025 per 1,000: $150
            "Lambda": 3 * 0.20 + 150_000 * 0.0000166667,  # $0.60 + $2.50
            "SageMaker endpoint": 0.23 * 730,  # $167.90
            "DynamoDB": 2 * 0.625,  # 2M write units at $0.625 a million
            "EventBridge": 1.00,
            "S3": 1000 * 0.0004 + 1100 * 0.005,  # $0.40 + $5.50
            "CloudWatch Logs": 0.50,  # 1 GB
            "CloudWatch metrics, alarms": 10 * 0.30 + 20 * 0.10,  # fixed, over 1M photos
        },
        abs=0.001,
    )
    assert sum(costs.values()) == pytest.approx(334.65, abs=0.01)


def test_an_express_workflow_costs_its_requests_and_gb_seconds_not_transitions() -> None:
    """Express (Step Functions pricing): $1.00 per million requests plus $0.00001667 per
    GB-second; a photo of 64 MB x 800 ms billed is 0.05 GB-s: $1.00 + $0.8335 a million,
    whatever its state transitions."""
    from dataclasses import replace

    lines = cost_per_million(replace(usage(1_000_000, ()), express_gb_seconds=0.05), PRICES)
    workflow = next(line for line in lines if line.service == "Step Functions")
    assert workflow.per_million == pytest.approx(1.0 + 0.05 * 16.67)
    assert workflow.what.startswith("1 request, 0.05 GB-s a photo (Express")


def test_a_million_photos_a_day_pins_the_endpoint_at_its_maximum() -> None:
    """1M/day is 694 photos/min; at 70 invocations per instance per minute target
    tracking wants 10 instances, the scalable target allows 4: 4 x $0.23 x 730 hours over
    30.4M photos."""
    photos = 1_000_000 * 730 / 24
    costs = by_service(photos, (Endpoint("ml.m5.xlarge", 1, 4, 70.0),))
    assert costs["SageMaker endpoint"] == pytest.approx(4 * 0.23 * 730 / (photos / 1e6))
    assert costs["SageMaker endpoint"] == pytest.approx(22.08, abs=0.01)
    assert costs["Step Functions"] == pytest.approx(150.0)
    assert costs["CloudWatch metrics, alarms"] == pytest.approx(5.0 / (photos / 1e6))


def test_variants_share_the_requests_by_weight_and_each_scales_on_its_share() -> None:
    """Two variants at half the traffic each: 694/2 = 347 photos/min, at 100 per instance
    each runs 4 (min 1, max 8)."""
    photos = 1_000_000 * 730 / 24
    halves = tuple(Endpoint("ml.m5.large", 1, 8, 100.0, 0.5) for _ in range(2))
    lines = cost_per_million(usage(photos, halves), PRICES)
    endpoint = [line for line in lines if line.service == "SageMaker endpoint"]
    assert [line.monthly for line in endpoint] == pytest.approx([4 * 0.115 * 730] * 2)
    assert all(line.what.startswith("4 x ml.m5.large") for line in endpoint)


def test_a_rate_past_the_measured_throughput_is_called_saturated() -> None:
    """One fixed instance (no autoscaling) at 1e9 photos/month: 22,831/min, over the
    measured 318 req/s (19,080/min) one instance serves."""
    lines = cost_per_million(usage(1e9, (Endpoint("ml.m5.xlarge", 1, 1),)), PRICES)
    endpoint = next(line for line in lines if line.service == "SageMaker endpoint")
    assert endpoint.monthly == pytest.approx(0.23 * 730)
    assert "saturated" in endpoint.what


def test_an_instance_type_without_a_price_is_refused_by_name() -> None:
    with pytest.raises(PricesError, match=r"no real-time inference price for ml\.p5\.48xlarge"):
        cost_per_million(usage(1e6, (Endpoint("ml.p5.48xlarge", 1, 1),)), PRICES)


def test_the_price_file_is_dated_and_names_a_source_for_each_service() -> None:
    data = json.loads(DEFAULT_PRICES.read_text())
    assert data["region"] == "us-east-1" and data["as_of"]
    services = ("step_functions", "lambda", "sagemaker", "dynamodb", "eventbridge", "s3")
    assert all(data[s]["source"].startswith("https://aws.amazon.com/") for s in services)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--photos-per-month", "0"], "'0' is not a positive number"),
        (["--photos-per-day", "nan"], "'nan' is not a positive number"),
        (["--executions", "0"], "'0' is not a number of executions from 1 to 1000"),
        (["--photos-per-day", "1", "--photos-per-month", "1"], "not allowed with argument"),
    ],
)
def test_bad_volumes_are_usage_errors(
    argument: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["cost", *argument])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# A Lambda that fails when asked to: its retry is a billed state transition.
HANDLER = """
class Refused(Exception):
    pass

def handler(event, context):
    if event.get("fail"):
        raise Refused("asked to")
    return event
"""
ASSUME: dict[str, Any] = {
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
def executed(local_aws: dict[str, str], unique_name: str) -> str:
    """A state machine (Pass, Lambda task with a retry, DynamoDB putItem into a table with
    one index, Succeed), run once plainly and once with the task failing twice."""
    iam, lambda_ = boto3.client("iam"), boto3.client("lambda")
    role = iam.create_role(RoleName=unique_name, AssumeRolePolicyDocument=json.dumps(ASSUME))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("step.py", HANDLER)
    function = lambda_.create_function(
        FunctionName=unique_name,
        Runtime="python3.11",
        Role=role["Role"]["Arn"],
        Handler="step.handler",
        MemorySize=256,
        Code={"ZipFile": code.getvalue()},
    )["FunctionArn"]
    boto3.client("dynamodb").create_table(
        TableName=unique_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "image", "AttributeType": "S"},
            {"AttributeName": "pending", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "image", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "queue",
                "KeySchema": [{"AttributeName": "pending", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    definition = {
        "StartAt": "Start",
        "States": {
            "Start": {"Type": "Pass", "Next": "Work"},
            "Work": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function, "Payload.$": "$"},
                "ResultPath": None,
                "Retry": [{"ErrorEquals": ["Refused"], "IntervalSeconds": 1, "MaxAttempts": 1}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Record"}],
                "Next": "Record",
            },
            "Record": {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Parameters": {
                    "TableName": unique_name,
                    "Item": {"image": {"S.$": "$.image"}, "pending": {"S": "yes"}},
                },
                "Next": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
    }
    trust = {
        **ASSUME,
        "Statement": [{**ASSUME["Statement"][0], "Principal": {"Service": "states.amazonaws.com"}}],
    }
    machine_role = iam.create_role(
        RoleName=f"{unique_name}-states", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    table_arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{unique_name}"
    statements = [
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": function},
        {"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": table_arn},
    ]
    iam.put_role_policy(
        RoleName=f"{unique_name}-states",
        PolicyName="run",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(
        name=unique_name, definition=json.dumps(definition), roleArn=machine_role
    )["stateMachineArn"]
    # The stack whose alarms are counted: one in its template.
    alarm = {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "MetricName": "ExecutionsFailed",
            "Namespace": "AWS/States",
            "Statistic": "Sum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        },
    }
    boto3.client("cloudformation").create_stack(
        StackName=unique_name, TemplateBody=json.dumps({"Resources": {"Failed": alarm}})
    )
    for number, fail in enumerate((False, True)):
        arn = sfn.start_execution(
            stateMachineArn=machine, input=json.dumps({"image": f"i{number}", "fail": fail})
        )["executionArn"]
        deadline = time.monotonic() + 60
        while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"{arn} still running"
            time.sleep(0.1)
        assert sfn.describe_execution(executionArn=arn)["status"] == "SUCCEEDED"
    return unique_name


def test_usage_is_counted_from_real_execution_histories(
    executed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two executions: 4 states entered each, plus one retry in the second (4.5
    transitions a photo); 1.5 Lambda requests; 2 write units each (the item, and its copy
    in the index its keys put it in)."""
    code = main(
        ["cost", "--stack", executed, "--state-machine", executed, "--skip-endpoint", "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["executions_sampled"] == 2
    assert report["prices_as_of"] == PRICES.as_of
    lines = {line["service"]: line for line in report["lines"]}
    assert lines["Step Functions"]["per_million"] == pytest.approx(4.5 * 25)
    assert lines["Step Functions"]["what"].startswith("4.5 state transitions")
    assert lines["Lambda"]["what"].startswith("1.5 invocations")
    assert lines["Lambda"]["per_million"] > 1.5 * 0.20  # requests, and measured GB-seconds
    assert lines["DynamoDB"]["per_million"] == pytest.approx(2 * 0.625)
    assert "1 alarms" in lines["CloudWatch metrics, alarms"]["what"]
    assert "SageMaker endpoint" not in lines


@pytest.fixture
def executed_express(executed: str) -> str:
    """The same workflow as an EXPRESS state machine logging every event (level ALL,
    without execution data) to a group of its own, run synchronously as `executed` ran:
    once plainly, once with its task failing once and retried after a second."""
    sfn, logs = boto3.client("stepfunctions"), boto3.client("logs")
    standard = sfn.describe_state_machine(
        stateMachineArn=f"arn:aws:states:us-east-1:123456789012:stateMachine:{executed}"
    )
    name = f"{executed}-express"
    logs.create_log_group(logGroupName=f"/aws/vendedlogs/states/{name}")
    group_arn = f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/vendedlogs/states/{name}:*"
    machine = sfn.create_state_machine(
        name=name,
        definition=standard["definition"],
        roleArn=standard["roleArn"],
        type="EXPRESS",
        loggingConfiguration={
            "level": "ALL",
            "includeExecutionData": False,
            "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": group_arn}}],
        },
    )["stateMachineArn"]
    for number, fail in enumerate((False, True)):
        ended = sfn.start_sync_execution(
            stateMachineArn=machine, input=json.dumps({"image": f"x{number}", "fail": fail})
        )
        assert ended["status"] == "SUCCEEDED"
    return name


def test_an_express_workflow_is_priced_per_request_and_gb_second_from_its_log_group(
    executed: str, executed_express: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step Functions pricing: Express workflows are charged $1.00 per million requests
    and for their duration, "rounded up to the nearest 100 ms", times the memory used,
    "billed in 64-MB chunks" ($0.00001667 per GB-second, the first tier), and no state
    transitions. Their history is read from the log group ("Using CloudWatch Logs to log
    execution history": Express workflows "don't record execution history in AWS Step
    Functions"). The handlers' usage is the Standard run's: 1.5 Lambda requests, 2 write
    units a photo."""
    code = main(
        ["cost", "--stack", executed, "--state-machine", executed_express, "--skip-endpoint",
         "--json"]
    )  # fmt: skip
    assert code == 0
    lines = {line["service"]: line for line in json.loads(capsys.readouterr().out)["lines"]}
    workflow = lines["Step Functions"]
    assert workflow["what"].startswith("1 request, ")
    gb_seconds = float(workflow["what"].split()[2])
    # 64 MB for at least 100 ms plainly, and 1.1 s with the retry's one-second interval.
    assert gb_seconds >= 0.0625 * (0.1 + 1.1) / 2 - 1e-9
    assert workflow["per_million"] == pytest.approx(1.0 + gb_seconds * 16.67)
    assert lines["Lambda"]["what"].startswith("1.5 invocations")
    assert lines["DynamoDB"]["per_million"] == pytest.approx(2 * 0.625)
    assert lines["CloudWatch Logs"]["per_million"] > 1.5 * 1000 / 1024**3 * 0.5 * 1e6


def pass_machine(name: str, kind: str) -> None:
    iam = boto3.client("iam")
    trust = {
        **ASSUME,
        "Statement": [{**ASSUME["Statement"][0], "Principal": {"Service": "states.amazonaws.com"}}],
    }
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    definition = {"StartAt": "Only", "States": {"Only": {"Type": "Pass", "End": True}}}
    boto3.client("stepfunctions").create_state_machine(
        name=name, definition=json.dumps(definition), roleArn=role["Role"]["Arn"], type=kind
    )


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("STANDARD", "has no finished executions to count"),
        ("EXPRESS", "is an EXPRESS workflow without logging at level ALL"),
    ],
)
def test_a_workflow_it_cannot_count_is_refused_with_the_reason(
    local_aws: dict[str, str],
    unique_name: str,
    kind: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Standard workflow's executions are counted from their histories; an Express
    workflow keeps none (GetExecutionHistory does not serve it), so without logging every
    event to a log group there is nothing to count."""
    pass_machine(unique_name, kind)
    code = main(["cost", "--state-machine", unique_name, "--stack", "-", "--skip-endpoint"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_an_endpoint_that_does_not_exist_is_refused_by_name(
    executed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["cost", "--stack", executed, "--state-machine", executed, "--endpoint", "no-such-endpoint"]
    )
    assert code == 2
    assert "no endpoint 'no-such-endpoint' in this account and region" in capsys.readouterr().err


def test_a_stack_that_does_not_exist_is_refused_by_name(
    executed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["cost", "--state-machine", executed, "--stack", "no-such-stack", "--skip-endpoint"]
    )
    assert code == 2
    assert "no stack 'no-such-stack' in this account and region" in capsys.readouterr().err
