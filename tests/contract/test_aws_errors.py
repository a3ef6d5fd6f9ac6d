"""The one reader of a failed AWS call's error code (contract/aws_errors.py)."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from contract.aws_errors import error_code


def test_the_code_of_an_aws_answer_is_its_error_code(local_aws: dict[str, str]) -> None:
    """A real refusal from the (local) AWS: GetObject of a bucket that does not exist."""
    with pytest.raises(ClientError) as refused:
        boto3.client("s3").get_object(Bucket="no-such-bucket-for-error-code", Key="k")
    assert error_code(refused.value) == "NoSuchBucket"


def test_an_error_without_an_aws_answer_has_no_code() -> None:
    assert error_code(ValueError("not an AWS call")) == ""
    assert error_code(ClientError({}, "GetObject")) == ""
