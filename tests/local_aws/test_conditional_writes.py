"""Conditional writes in the local AWS are atomic, as on AWS (local_aws/conditional_writes.py):
of many writers conditioned on the same revision or ETag at the same moment, exactly one
succeeds and every other is refused with AWS's error."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
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
    """S3 API reference (Object, ETag): an object PUT in plaintext has "an MD5 digest of
    their object data" as its ETag, so a writer that puts the bytes already there leaves
    the ETag as it was and a second If-Match on it rightly succeeds too. Every writer here
    puts bytes no other writer and no earlier round put: exactly one can match."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)

    for round_number in range(ROUNDS):
        etag = s3.put_object(
            Bucket=unique_name, Key="manifest.lst", Body=f"round {round_number}".encode()
        )["ETag"]

        def put(number: int, etag: str = etag, round_number: int = round_number) -> None:
            body = f"round {round_number}, writer {number}".encode()
            s3.put_object(Bucket=unique_name, Key="manifest.lst", Body=body, IfMatch=etag)

        outcomes = _race(put)
        assert outcomes == {"ok": 1, "PreconditionFailed": WRITERS - 1}

    def create(number: int) -> None:
        s3.put_object(Bucket=unique_name, Key="new.lst", Body=str(number).encode(), IfNoneMatch="*")

    outcomes = _race(create)
    assert outcomes == {"ok": 1, "PreconditionFailed": WRITERS - 1}


def test_a_put_of_the_same_bytes_keeps_the_etag_an_if_match_names(
    local_aws: dict[str, str], unique_name: str
) -> None:
    """Why the race above puts distinct bytes: the ETag is the content's MD5 (S3 API
    reference, Object), so putting what is already there does not change it, and a later
    If-Match on the old ETag still succeeds; once the content changes, it is refused."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    etag = s3.put_object(Bucket=unique_name, Key="manifest.lst", Body=b"0")["ETag"]
    same = s3.put_object(Bucket=unique_name, Key="manifest.lst", Body=b"0", IfMatch=etag)
    assert same["ETag"] == etag
    s3.put_object(Bucket=unique_name, Key="manifest.lst", Body=b"1", IfMatch=etag)
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=unique_name, Key="manifest.lst", Body=b"2", IfMatch=etag)
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
