"""Functions created in the local AWS from code written here: a probe handler that reports
what it was run with, zipped as a deployment package (test_lambda_executor.py, and the
Step Functions tests that need a function to call)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from tests.local_aws.conftest import SERVER_SECRET, LocalAws

ASSUME_ROLE = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


PROBE = """
import json, os, sys, time

def describe(event, context):
    print("a print must not reach the protocol")  # stdout of the handler
    return {
        "pid": os.getpid(),
        "greeting": os.environ.get("GREETING"),
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "sagemaker_runtime": os.environ.get("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"),
        "secret": os.environ.get("SERVER_SECRET_NAME"),
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "event": event,
    }

class ImageRejected(Exception):
    pass

def fail(event, context):
    raise ImageRejected("no bicycles on Sundays")

def sleep(event, context):
    time.sleep(event.get("seconds", 30))
    return "woke"

def write(event, context):
    with open(event["path"], "w") as out:
        out.write(context.aws_request_id)
    return None

def exit_now(event, context):
    os._exit(3)

def unserializable(event, context):
    return {"when": object()}
""".replace("SERVER_SECRET_NAME", SERVER_SECRET)


def package(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def create(
    local: LocalAws, name: str, handler: str, code: bytes | None = None, **config: Any
) -> Any:
    iam = local.client("iam")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(ASSUME_ROLE))
    lambda_ = local.client("lambda")
    lambda_.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role["Role"]["Arn"],
        Handler=handler,
        Code={"ZipFile": code or package({"probe.py": PROBE})},
        **config,
    )
    return lambda_
