"""Conditional writes in the local AWS are atomic, as on AWS (local_aws/conditional_writes.py):
of many writers conditioned on the same revision or ETag at the same moment, exactly one
succeeds and every other is refused with AWS's error."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.exceptions import ClientError

from training_job.review.table import table_definition

WRITERS = 16
# moto without the lock loses such a race now and then, not every time: several rounds
# make a lost one show (each round alone caught it about one time in three).
ROUNDS = 8


def _race(write: object) -> Counter[str]:
    start = threading.Barrier(WRITERS)

    def one(number: int) -> str:
        start.wait()
        try:
            write(number)  # type: ignore[operator]
        except ClientError as error:
            return str(error.response["Error"]["Code"])
        return "ok"

    with ThreadPoolExecutor(WRITERS) as pool:
        return Counter(pool.map(one, range(WRITERS)))


def test_one_of_many_updates_on_the_same_revision_wins(
    local_aws: dict[str, str], unique_name: str
) -> None:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**table_definition(unique_name))
    key = {"image": {"S": "s3://b/k.png"}}

    def update(number: int) -> None:
        dynamodb.update_item(
            TableName=unique_name,
            Key=key,
            UpdateExpression="SET revision = revision + :one, writer = :writer",
            ConditionExpression="revision = :seen",
            ExpressionAttributeValues={
                ":one": {"N": "1"}, ":seen": {"N": "0"}, ":writer": {"N": str(number)}
            },
        )  # fmt: skip

    for _ in range(ROUNDS):
        dynamodb.put_item(TableName=unique_name, Item={**key, "revision": {"N": "0"}})
        outcomes = _race(update)
        assert outcomes == {"ok": 1, "ConditionalCheckFailedException": WRITERS - 1}
        item = dynamodb.get_item(TableName=unique_name, Key=key)["Item"]
        assert item["revision"] == {"N": "1"}


def test_one_of_many_puts_on_the_same_etag_wins(
    local_aws: dict[str, str], unique_name: str
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    etag = s3.put_object(Bucket=unique_name, Key="manifest.lst", Body=b"0")["ETag"]

    def put(number: int) -> None:
        s3.put_object(
            Bucket=unique_name, Key="manifest.lst", Body=str(number).encode(), IfMatch=etag
        )

    outcomes = _race(put)
    assert outcomes == {"ok": 1, "PreconditionFailed": WRITERS - 1}

    def create(number: int) -> None:
        s3.put_object(Bucket=unique_name, Key="new.lst", Body=str(number).encode(), IfNoneMatch="*")

    outcomes = _race(create)
    assert outcomes == {"ok": 1, "PreconditionFailed": WRITERS - 1}
