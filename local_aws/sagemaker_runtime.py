"""SageMaker Runtime at the local AWS: IAM first, then the local endpoint.

On AWS, InvokeEndpoint reaches SageMaker's runtime API, which evaluates the caller's IAM
(sagemaker:InvokeEndpoint on the endpoint's ARN) before the request reaches the model's
container. moto's runtime answers canned strings (and fails on a binary body). Here the
local AWS serves `POST /endpoints/<name>/invocations` itself: a request signed with a
role's temporary credentials is evaluated (`local_aws.iam_enforcement.authorize_signed`), then
forwarded unchanged to the local endpoint, the one the process that started the local AWS
names in `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`; the endpoint's answer (status, headers,
body) comes back unchanged. So the Lambda executor gives handlers the local AWS as their
SageMaker Runtime, and classify's role is what lets it call the endpoint, as on AWS.
The deployments and the variants' metrics reach the same endpoint (`upstream_url`).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any
from urllib.parse import unquote

import requests

from local_aws import iam, iam_enforcement

UPSTREAM_VARIABLE = "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"
# SageMaker Runtime waits 60 s for the container's answer; a little more for the hop.
READ_TIMEOUT_SECONDS = 65.0
HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}

_sessions = threading.local()


class EndpointUnavailable(Exception):
    """No local endpoint is named, or it did not take or apply a routing."""


def upstream_url() -> str:
    """The local endpoint's address, as the process that started the local AWS names it."""
    url = os.environ.get(UPSTREAM_VARIABLE, "").rstrip("/")
    if not url:
        raise EndpointUnavailable(f"{UPSTREAM_VARIABLE} names no local endpoint")
    return url


def _session() -> requests.Session:
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
    return session


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, body


def invoke_endpoint(request: Any, full_url: str, headers: dict[str, str]) -> Any:
    """The local AWS's route for `POST /endpoints/<name>/invocations`."""
    path = request.path
    name = unquote(path.split("/endpoints/", 1)[1].split("/", 1)[0])
    body = request.get_data()
    credential = (headers.get("Authorization") or "").split("Credential=", 1)[-1].split("/")
    region = credential[2] if len(credential) > 2 else "us-east-1"
    account = iam.ACCOUNT_ID
    resource = f"arn:aws:sagemaker:{region}:{account}:endpoint/{name.lower()}"
    try:
        iam_enforcement.authorize_signed(
            request.method, path, headers, body, "sagemaker:InvokeEndpoint", resource
        )
    except iam_enforcement.InvalidSignature as error:
        return _error(403, "InvalidSignatureException", str(error))
    except iam.AccessDenied as denied:
        return _error(403, "AccessDeniedException", str(denied))
    upstream = os.environ.get(UPSTREAM_VARIABLE, "").rstrip("/")
    if not upstream:
        return _error(400, "ValidationError", f"Endpoint {name} of account {account} not found.")
    forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
    try:
        answer = _session().post(
            f"{upstream}{path}", data=body, headers=forwarded, timeout=(5, READ_TIMEOUT_SECONDS)
        )
    except requests.ConnectionError:
        return _error(400, "ValidationError", f"Endpoint {name} of account {account} not found.")
    except requests.Timeout:
        return _error(
            424,
            "ModelError",
            "Received server error (0) from primary with message "
            '"Your invocation timed out while waiting for a response from container primary."',
        )
    returned = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
    returned.pop("Content-Encoding", None)  # requests has already decoded the body
    return answer.status_code, returned, answer.content


def serve_invocations_here() -> None:
    """Gap: moto's SageMaker Runtime (see the module) is replaced for InvokeEndpoint."""
    from moto.sagemakerruntime import urls

    for pattern in list(urls.url_paths):
        if pattern.endswith("/invocations$"):
            urls.url_paths[pattern] = invoke_endpoint
