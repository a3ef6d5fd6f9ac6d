"""The local AWS's IAM: what it evaluates for a role's temporary credentials, and how.

Each test signs its requests with the credentials of a role made for it (STS AssumeRole)
and checks the answer the local AWS gives, as AWS would give it.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from contract.decisions import ANSWERED_INDEX, REVIEW_INDEX
from local_aws import iam
from tests.decisions_table import create_decisions_table

LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def _role(name: str, statements: list[dict[str, Any]], trust: dict[str, Any] = LAMBDA_TRUST) -> str:
    client = boto3.client("iam")
    arn: str = client.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"
    ]["Arn"]
    if statements:
        client.put_role_policy(
            RoleName=name,
            PolicyName="policy",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        )
    return arn


def _as_role(arn: str, service: str, secret: str | None = None) -> Any:
    keys = boto3.client("sts").assume_role(RoleArn=arn, RoleSessionName="test-session")[
        "Credentials"
    ]
    return boto3.client(
        service,
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=secret or keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
    )


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


@pytest.fixture
def bucket(local_aws: dict[str, str], unique_name: str) -> str:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_object(Bucket=unique_name, Key="data_capture/a.jsonl", Body=b"{}")
    s3.put_object(Bucket=unique_name, Key="train/a.png", Body=b"png")
    return unique_name


def test_conditions_on_s3_prefix_and_cloudwatch_namespace_are_evaluated(
    bucket: str, unique_name: str
) -> None:
    role = _role(
        unique_name,
        [
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": ["data_capture/*"]}},
            },
            {
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": "Scones/Test"}},
            },
        ],
    )
    s3, cloudwatch = _as_role(role, "s3"), _as_role(role, "cloudwatch")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="data_capture/")["Contents"]
    assert [item["Key"] for item in listed] == ["data_capture/a.jsonl"]
    for prefix in ("train/", None):
        with pytest.raises(ClientError) as denied:
            s3.list_objects_v2(Bucket=bucket, **({"Prefix": prefix} if prefix else {}))
        assert _code(denied) == "AccessDenied"
    cloudwatch.put_metric_data(
        Namespace="Scones/Test", MetricData=[{"MetricName": "m", "Value": 1}]
    )
    with pytest.raises(ClientError) as denied:
        cloudwatch.put_metric_data(Namespace="Other", MetricData=[{"MetricName": "m", "Value": 1}])
    assert _code(denied) == "AccessDenied"


def test_a_query_allowed_on_an_index_reaches_that_index_only(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """DynamoDB's resource is the table's ARN, or the index's when the request names one:
    Query on table/T/index/I does not allow a Query of the table, a Scan, or another index."""
    create_decisions_table(unique_name)
    table_arn = boto3.client("dynamodb").describe_table(TableName=unique_name)["Table"]["TableArn"]
    role = _role(
        unique_name,
        [
            {
                "Effect": "Allow",
                "Action": "dynamodb:Query",
                "Resource": f"{table_arn}/index/{REVIEW_INDEX}",
            }
        ],
    )
    dynamodb = _as_role(role, "dynamodb")
    pending = {
        "KeyConditionExpression": "review_pending = :p",
        "ExpressionAttributeValues": {":p": {"S": "pending"}},
    }
    assert dynamodb.query(TableName=unique_name, IndexName=REVIEW_INDEX, **pending)["Count"] == 0
    refused = [
        lambda: dynamodb.query(
            TableName=unique_name,
            KeyConditionExpression="image = :i",
            ExpressionAttributeValues={":i": {"S": "s3://b/k"}},
        ),
        lambda: dynamodb.query(
            TableName=unique_name,
            IndexName=ANSWERED_INDEX,
            KeyConditionExpression="review_reason = :r",
            ExpressionAttributeValues={":r": {"S": "audit"}},
        ),
        lambda: dynamodb.scan(TableName=unique_name, IndexName=REVIEW_INDEX),
        lambda: dynamodb.get_item(TableName=unique_name, Key={"image": {"S": "s3://b/k"}}),
    ]
    for call in refused:
        with pytest.raises(ClientError) as denied:
            call()
        assert _code(denied) == "AccessDeniedException"


def test_a_condition_the_local_aws_cannot_evaluate_grants_nothing_and_its_deny_denies(
    bucket: str, unique_name: str
) -> None:
    unknown = {"StringEquals": {"aws:SourceVpce": "vpce-1234"}}
    allow_with_unknown = _role(
        f"{unique_name}-a",
        [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Condition": unknown}],
    )
    with pytest.raises(ClientError) as denied:
        _as_role(allow_with_unknown, "s3").get_object(Bucket=bucket, Key="train/a.png")
    assert _code(denied) == "AccessDenied"
    deny_with_unknown = _role(
        f"{unique_name}-d",
        [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*", "Condition": unknown},
        ],
    )
    with pytest.raises(ClientError) as denied:
        _as_role(deny_with_unknown, "s3").get_object(Bucket=bucket, Key="train/a.png")
    assert _code(denied) == "AccessDenied"


def test_dynamodb_leading_keys_and_attributes_are_evaluated_for_put_item(
    local_aws: dict[str, str], unique_name: str
) -> None:
    table = boto3.client("dynamodb")
    table.create_table(
        TableName=unique_name,
        AttributeDefinitions=[{"AttributeName": "image", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "image", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    role = _role(
        unique_name,
        [
            {
                "Effect": "Allow",
                "Action": "dynamodb:PutItem",
                "Resource": f"arn:aws:dynamodb:us-east-1:123456789012:table/{unique_name}",
                "Condition": {
                    "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["s3://ours/*"]},
                    "ForAllValues:StringEquals": {"dynamodb:Attributes": ["image", "label"]},
                },
            }
        ],
    )
    dynamodb = _as_role(role, "dynamodb")
    ours = {"image": {"S": "s3://ours/incoming/a.png"}, "label": {"S": "bicycle"}}
    dynamodb.put_item(TableName=unique_name, Item=ours)
    refused = [
        {**ours, "image": {"S": "s3://theirs/incoming/a.png"}},  # another bucket's photo
        {**ours, "answer": {"S": "bicycle"}},  # an attribute the statement does not name
    ]
    for item in refused:
        with pytest.raises(ClientError) as denied:
            dynamodb.put_item(TableName=unique_name, Item=item)
        assert _code(denied) == "AccessDeniedException"


def test_dynamodb_return_values_and_update_item_keys_are_evaluated(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """The decision writes may read nothing back (issue 21, item 12). DynamoDB developer
    guide, "Using IAM policy conditions for fine-grained access control": dynamodb:ReturnValues
    is the request's ReturnValues parameter, and dynamodb:LeadingKeys/dynamodb:Attributes
    apply to UpdateItem as to PutItem (its key's partition value; the attributes it names)."""
    table = boto3.client("dynamodb")
    table.create_table(
        TableName=unique_name,
        AttributeDefinitions=[{"AttributeName": "image", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "image", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    condition = {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["s3://ours/*"]},
        "StringEqualsIfExists": {"dynamodb:ReturnValues": "NONE"},
    }
    arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{unique_name}"
    role = _role(
        unique_name,
        [
            {
                "Effect": "Allow",
                "Action": "dynamodb:PutItem",
                "Resource": arn,
                "Condition": condition,
            },
            {
                "Effect": "Allow",
                "Action": "dynamodb:UpdateItem",
                "Resource": arn,
                "Condition": {
                    **condition,
                    "ForAllValues:StringEquals": {
                        "dynamodb:Attributes": ["image", "event_pending", "execution"]
                    },
                },
            },
        ],
    )
    dynamodb = _as_role(role, "dynamodb")
    ours = {"image": {"S": "s3://ours/a.png"}, "execution": {"S": "e"}}
    dynamodb.put_item(TableName=unique_name, Item=ours)  # no ReturnValues: the key is absent
    dynamodb.put_item(TableName=unique_name, Item=ours, ReturnValues="NONE")
    clear = {
        "TableName": unique_name,
        "Key": {"image": ours["image"]},
        "UpdateExpression": "REMOVE #pending",
        "ConditionExpression": "#execution = :execution",
        "ExpressionAttributeNames": {"#pending": "event_pending", "#execution": "execution"},
        "ExpressionAttributeValues": {":execution": {"S": "e"}},
    }
    dynamodb.update_item(**clear, ReturnValues="NONE")
    refused: list[tuple[str, dict[str, Any]]] = [
        ("put_item", {"TableName": unique_name, "Item": ours, "ReturnValues": "ALL_OLD"}),
        ("update_item", {**clear, "ReturnValues": "ALL_NEW"}),
        ("update_item", {**clear, "Key": {"image": {"S": "s3://theirs/a.png"}}}),
        ("update_item", {**clear, "UpdateExpression": "REMOVE #pending, label"}),
    ]
    for operation, arguments in refused:
        with pytest.raises(ClientError) as denied:
            getattr(dynamodb, operation)(**arguments)
        assert _code(denied) == "AccessDeniedException", arguments


def test_dynamodb_keys_on_an_action_that_does_not_fill_them_grant_nothing() -> None:
    # The local AWS fills dynamodb:LeadingKeys and dynamodb:Attributes in for PutItem and
    # UpdateItem only:
    # on another request they are unknown, not absent, and ForAllValues must not hold.
    statement = {
        "Effect": "Allow",
        "Action": "dynamodb:*",
        "Resource": "*",
        "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["s3://ours/*"]}},
    }
    request = iam.Request("arn:aws:iam::123456789012:role/r", "dynamodb:DeleteItem", "t", {})
    assert iam.evaluate([{"Statement": [statement]}], request) is iam.Decision.NONE
    put = iam.Request(
        "arn:aws:iam::123456789012:role/r",
        "dynamodb:PutItem",
        "t",
        {"dynamodb:LeadingKeys": ("s3://ours/a.png",)},
    )
    assert iam.evaluate([{"Statement": [statement]}], put) is iam.Decision.ALLOW


def test_eventbridge_source_and_detail_type_are_evaluated_for_each_entry(
    local_aws: dict[str, str], unique_name: str
) -> None:
    role = _role(
        unique_name,
        [
            {
                "Effect": "Allow",
                "Action": "events:PutEvents",
                "Resource": "arn:aws:events:us-east-1:123456789012:event-bus/default",
                "Condition": {
                    "StringEquals": {"events:source": "ours", "events:detail-type": "Ours"}
                },
            }
        ],
    )
    events = _as_role(role, "events")
    entry = {"Source": "ours", "DetailType": "Ours", "Detail": "{}"}
    assert events.put_events(Entries=[entry, entry])["FailedEntryCount"] == 0
    for entries in (
        [{**entry, "Source": "theirs"}],
        [entry, {**entry, "DetailType": "Theirs"}],  # one entry not allowed refuses all
        [{**entry, "EventBusName": "other"}],
    ):
        with pytest.raises(ClientError) as denied:
            events.put_events(Entries=entries)
        assert _code(denied) == "AccessDeniedException"


def test_a_missing_key_is_access_denied_unless_the_role_may_list_the_bucket(
    bucket: str, unique_name: str
) -> None:
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    only_read = _as_role(_role(f"{unique_name}-r", [read]), "s3")
    assert only_read.get_object(Bucket=bucket, Key="train/a.png")["Body"].read() == b"png"
    with pytest.raises(ClientError) as denied:
        only_read.get_object(Bucket=bucket, Key="train/missing.png")
    assert _code(denied) == "AccessDenied"
    # A ListBucket allowed only under some s3:prefix values does not reveal a missing key.
    prefixed = {
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{bucket}",
        "Condition": {"StringLike": {"s3:prefix": ["train/*"]}},
    }
    with pytest.raises(ClientError) as denied:
        _as_role(_role(f"{unique_name}-p", [read, prefixed]), "s3").get_object(
            Bucket=bucket, Key="train/missing.png"
        )
    assert _code(denied) == "AccessDenied"
    listing = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}
    with pytest.raises(ClientError) as missing:
        _as_role(_role(f"{unique_name}-l", [read, listing]), "s3").get_object(
            Bucket=bucket, Key="train/missing.png"
        )
    assert _code(missing) == "NoSuchKey"


def test_the_bucket_policy_is_evaluated_with_the_roles_policies(
    bucket: str, unique_name: str
) -> None:
    reader = _role(f"{unique_name}-in", [])  # no identity policy at all
    writer = _role(
        f"{unique_name}-out",
        [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}],
    )
    objects = f"arn:aws:s3:::{bucket}/*"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": reader},
                "Action": "s3:GetObject",
                "Resource": objects,
            },
            {
                "Effect": "Deny",
                "Principal": {"AWS": writer},
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/locked/*",
            },
            # TLS only: the local AWS stands in for AWS's HTTPS endpoints, so this never
            # applies; the next one, with the opposite value, always does.
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": objects,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": objects,
                "Condition": {"Bool": {"aws:SecureTransport": "true"}},
            },
        ],
    }
    boto3.client("s3").put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert _as_role(reader, "s3").get_object(Bucket=bucket, Key="train/a.png")["Body"].read()
    s3_writer = _as_role(writer, "s3")
    s3_writer.put_object(Bucket=bucket, Key="open/b.png", Body=b"x")
    with pytest.raises(ClientError) as denied:
        s3_writer.put_object(Bucket=bucket, Key="locked/b.png", Body=b"x")
    assert _code(denied) == "AccessDenied"
    # The evaluated condition applies to everyone, the operator included.
    with pytest.raises(ClientError) as denied:
        boto3.client("s3").delete_object(Bucket=bucket, Key="train/a.png")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_wrong_secret_is_refused_before_any_policy(bucket: str, unique_name: str) -> None:
    role = _role(unique_name, [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}])
    with pytest.raises(ClientError) as refused:
        _as_role(role, "s3", secret="not-the-secret").get_object(Bucket=bucket, Key="train/a.png")
    assert _code(refused) == "SignatureDoesNotMatch"


def _function(name: str, role: str) -> Any:
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("probe.py", "def handler(event, context):\n    return 'ran'\n")
    client = boto3.client("lambda")
    client.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="probe.handler",
        Code={"ZipFile": code.getvalue()},
    )
    return client


@pytest.mark.parametrize(
    ("principal", "condition", "runs"),
    [
        ("lambda.amazonaws.com", None, True),
        ("ec2.amazonaws.com", None, False),
        (
            "lambda.amazonaws.com",
            {"ArnLike": {"aws:SourceArn": "arn:aws:lambda:*:*:function:{name}"}},
            True,
        ),
        (
            "lambda.amazonaws.com",
            {"ArnLike": {"aws:SourceArn": "arn:aws:lambda:*:*:function:other"}},
            False,
        ),
        ("lambda.amazonaws.com", {"StringEquals": {"aws:SourceAccount": "{account}"}}, True),
        ("lambda.amazonaws.com", {"StringEquals": {"aws:SourceAccount": "999999999999"}}, False),
    ],
    ids=["trusted", "other-service", "source-arn", "other-source-arn", "account", "other-account"],
)
def test_a_function_runs_only_with_a_role_that_trusts_lambda_for_it(
    local_aws: dict[str, str],
    unique_name: str,
    principal: str,
    condition: dict[str, Any] | None,
    runs: bool,
) -> None:
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": principal},
        "Action": "sts:AssumeRole",
    }
    if condition:
        text = json.dumps(condition).replace("{name}", unique_name)
        statement["Condition"] = json.loads(text.replace("{account}", iam.ACCOUNT_ID))
    role = _role(unique_name, [], {"Version": "2012-10-17", "Statement": [statement]})
    client = _function(unique_name, role)
    if runs:
        assert client.invoke(FunctionName=unique_name)["Payload"].read() == b'"ran"'
    else:
        with pytest.raises(ClientError) as refused:
            client.invoke(FunctionName=unique_name)
        assert _code(refused) == "InvalidParameterValueException"
        assert "cannot be assumed by Lambda" in str(refused.value)


def test_the_function_acts_with_its_role_and_the_operator_is_not_evaluated(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """The handler's credentials are its role's: STS names the assumed role."""
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr(
            "whoami.py",
            "import boto3\n"
            "def handler(event, context):\n"
            "    return boto3.client('sts').get_caller_identity()['Arn']\n",
        )
    role = _role(unique_name, [])
    client = boto3.client("lambda")
    client.create_function(
        FunctionName=unique_name,
        Runtime="python3.11",
        Role=role,
        Handler="whoami.handler",
        Code={"ZipFile": code.getvalue()},
    )
    arn = json.loads(client.invoke(FunctionName=unique_name)["Payload"].read())
    assert isinstance(arn, str), arn
    assert arn.startswith(f"arn:aws:sts::{iam.ACCOUNT_ID}:assumed-role/{unique_name}/")
    # The operator's own keys (the tests', the CLI's) are AWS's administrator: not evaluated.
    assert boto3.client("sts").get_caller_identity()["Account"] == iam.ACCOUNT_ID
