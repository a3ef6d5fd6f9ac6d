"""SageMaker Runtime at the local AWS: IAM first, then the endpoint's answer, unchanged.

A local AWS of this module's own forwards to a small endpoint that answers by endpoint
name: `ok` with probabilities, `refuses` with a 415 error as the serving container does,
`gone` by closing the connection (an endpoint that is not there).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local_aws.server import local_aws_server, local_client
from tests.conftest import free_port

TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


class Endpoint(BaseHTTPRequestHandler):
    """A probe, not a stand-in for the local endpoint: it echoes what reached it (body size,
    Accept) and injects the faults a real model server would not produce on demand (a 415,
    a connection closed without an answer)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        name = self.path.split("/")[2]
        if name == "gone":
            self.close_connection = True
            self.connection.close()
            return
        if name == "refuses":
            status, answer = 415, json.dumps({"error": "unsupported content type"}).encode()
        else:
            echo = {"bytes": len(body), "accept": self.headers.get("Accept")}
            status, answer = 200, json.dumps(echo).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Amzn-Invoked-Production-Variant", "AllTraffic")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    runtime = {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{endpoint.server_port}"}
    state = tmp_path_factory.mktemp("iam-runtime-aws")
    try:
        with local_aws_server(state, free_port(), environment=runtime) as server:
            yield server.client_environment()
    finally:
        endpoint.shutdown()
        endpoint.server_close()


def _runtime(aws: dict[str, str], endpoints: list[str] | None) -> Any:
    """SageMaker Runtime at the local AWS, as the operator (None) or as a role that may
    invoke `endpoints`."""
    if endpoints is None:
        return local_client(aws, "sagemaker-runtime")
    iam = local_client(aws, "iam")
    name = f"runtime-{len(endpoints)}-{os.urandom(4).hex()}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]
    resources = [f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{e}" for e in endpoints]
    statement = {"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": resources}
    iam.put_role_policy(
        RoleName=name,
        PolicyName="invoke",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
    )
    keys = local_client(aws, "sts").assume_role(RoleArn=role["Arn"], RoleSessionName="runtime")
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=keys["Credentials"]["AccessKeyId"],
        aws_secret_access_key=keys["Credentials"]["SecretAccessKey"],
        aws_session_token=keys["Credentials"]["SessionToken"],
    )


def test_an_allowed_call_reaches_the_endpoint_with_its_body_and_headers(
    aws: dict[str, str],
) -> None:
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # binary, as images are
    answer = _runtime(aws, ["ok"]).invoke_endpoint(
        EndpointName="ok", ContentType="image/png", Accept="application/json", Body=image
    )
    assert json.loads(answer["Body"].read()) == {"bytes": len(image), "accept": "application/json"}
    assert answer["ContentType"] == "application/json"
    assert answer["InvokedProductionVariant"] == "AllTraffic"


def test_a_role_without_the_endpoint_is_refused_before_the_endpoint(aws: dict[str, str]) -> None:
    with pytest.raises(ClientError) as refused:
        _runtime(aws, ["another-endpoint"]).invoke_endpoint(EndpointName="ok", Body=b"{}")
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "sagemaker:InvokeEndpoint" in refused.value.response["Error"]["Message"]


def test_the_endpoints_own_error_comes_back_unchanged(aws: dict[str, str]) -> None:
    with pytest.raises(ClientError) as refused:
        _runtime(aws, None).invoke_endpoint(EndpointName="refuses", Body=b"{}")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 415


def test_an_endpoint_that_is_not_there_is_a_validation_error(aws: dict[str, str]) -> None:
    with pytest.raises(ClientError) as missing:
        _runtime(aws, None).invoke_endpoint(EndpointName="gone", Body=b"{}")
    assert missing.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint gone of account" in missing.value.response["Error"]["Message"]
