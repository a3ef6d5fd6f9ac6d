"""Functions created in the local AWS run their deployed code, in warm worker processes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.local_aws.conftest import LocalAws
from tests.local_aws.lambda_helpers import PROBE, create, package


def invoke(lambda_: Any, name: str, payload: Any = None, raw: bytes | None = None) -> Any:
    body = raw if raw is not None else json.dumps(payload if payload is not None else {})
    response = lambda_.invoke(FunctionName=name, Payload=body)
    return response, json.loads(response["Payload"].read() or b"null")


def test_the_handler_runs_with_its_configuration_and_a_lambda_context(
    workflow_aws: LocalAws, unique_name: str, fake_endpoint: str
) -> None:
    lambda_ = create(
        workflow_aws,
        unique_name,
        "probe.describe",
        MemorySize=256,
        Timeout=7,
        Environment={"Variables": {"GREETING": "hello"}},
    )
    response, result = invoke(lambda_, unique_name, {"s3_key": "incoming/a.png"})
    assert "FunctionError" not in response
    assert result["greeting"] == "hello"
    assert result["event"] == {"s3_key": "incoming/a.png"}
    assert result["function_name"] == unique_name
    assert result["memory"] == "256"
    assert 0 < result["remaining_ms"] <= 7000
    assert len(result["request_id"]) == 36
    # Endpoints are passed through ("endpoints differ"); nothing else of the server's is.
    # SageMaker Runtime is the local AWS, which checks IAM and forwards to fake_endpoint.
    assert result["endpoint"] == workflow_aws.environment["AWS_ENDPOINT_URL"]
    assert result["sagemaker_runtime"] == workflow_aws.environment["AWS_ENDPOINT_URL"]
    assert result["secret"] is None


def test_warm_workers_are_reused_and_replaced_when_the_configuration_changes(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    lambda_ = create(workflow_aws, unique_name, "probe.describe")
    _, first = invoke(lambda_, unique_name)
    _, second = invoke(lambda_, unique_name)
    assert first["pid"] == second["pid"]
    lambda_.update_function_configuration(
        FunctionName=unique_name, Environment={"Variables": {"GREETING": "changed"}}
    )
    _, third = invoke(lambda_, unique_name)
    assert third["greeting"] == "changed"
    assert third["pid"] != first["pid"]


def test_a_raised_exception_comes_back_as_lambda_reports_it(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    lambda_ = create(workflow_aws, unique_name, "probe.fail")
    response, error = invoke(lambda_, unique_name)
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ImageRejected"
    assert error["errorMessage"] == "no bicycles on Sundays"
    assert any("probe.py" in frame for frame in error["stackTrace"])
    assert not any("bootstrap.py" in frame for frame in error["stackTrace"])


def test_a_timeout_kills_the_worker_and_reports_sandbox_timedout(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    lambda_ = create(workflow_aws, unique_name, "probe.sleep", Timeout=1)
    response, error = invoke(lambda_, unique_name, {"seconds": 30})
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in error["errorMessage"]
    # The next invocation gets a fresh worker that works.
    response, result = invoke(lambda_, unique_name, {"seconds": 0})
    assert "FunctionError" not in response
    assert result == "woke"


def test_a_worker_that_exits_reports_runtime_exit_error(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    lambda_ = create(workflow_aws, unique_name, "probe.exit_now")
    response, error = invoke(lambda_, unique_name)
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in error["errorMessage"]


def test_a_result_that_is_not_json_reports_a_marshal_error(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    lambda_ = create(workflow_aws, unique_name, "probe.unserializable")
    response, error = invoke(lambda_, unique_name)
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.MarshalError"


@pytest.mark.parametrize(
    ("handler", "files", "error_type"),
    [
        ("missing.handler", {"probe.py": PROBE}, "Runtime.ImportModuleError"),
        ("probe.nothing_here", {"probe.py": PROBE}, "Runtime.HandlerNotFound"),
        ("probe.describe", {"probe.py": "def describe(:\n"}, "Runtime.ImportModuleError"),
        ("nodots", {"probe.py": PROBE}, "Runtime.MalformedHandlerName"),
    ],
)
def test_a_package_that_cannot_start_reports_the_init_error(
    workflow_aws: LocalAws,
    unique_name: str,
    handler: str,
    files: dict[str, str],
    error_type: str,
) -> None:
    lambda_ = create(workflow_aws, unique_name, handler, package(files))
    response, error = invoke(lambda_, unique_name)
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == error_type


def test_malformed_and_oversized_payloads_are_refused_before_any_code_runs(
    workflow_aws: LocalAws, unique_name: str, tmp_path: Path
) -> None:
    lambda_ = create(workflow_aws, unique_name, "probe.write")
    with pytest.raises(ClientError) as malformed:
        invoke(lambda_, unique_name, raw=b'{"path": "' + str(tmp_path / "x").encode() + b'"')
    assert malformed.value.response["Error"]["Code"] == "InvalidRequestContentException"
    with pytest.raises(ClientError) as oversized:
        invoke(lambda_, unique_name, {"path": str(tmp_path / "y"), "pad": "x" * 6_300_000})
    assert oversized.value.response["Error"]["Code"] == "RequestTooLargeException"
    assert not list(tmp_path.iterdir())


def test_a_response_over_6_mb_is_lambdas_function_error(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    # moto's own check (awslambda/responses.py), which the executor's answer passes through.
    code = package({"big.py": "def handler(event, context):\n    return 'x' * event['n']\n"})
    lambda_ = create(workflow_aws, unique_name, "big.handler", code=code)
    response, result = invoke(lambda_, unique_name, {"n": 6_291_556})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert result == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": "Response payload size exceeded maximum allowed payload size "
        "(6291556 bytes).",
    }
    response, result = invoke(lambda_, unique_name, {"n": 5 * 1024 * 1024})
    assert "FunctionError" not in response
    assert len(result) == 5 * 1024 * 1024


def test_a_package_with_an_entry_outside_its_root_is_refused_and_nothing_is_written(
    workflow_aws: LocalAws, unique_name: str, tmp_path: Path
) -> None:
    hostile = package({"probe.py": PROBE, "../../escaped.py": "print('out')\n"})
    lambda_ = create(workflow_aws, unique_name, "probe.describe", hostile)
    with pytest.raises(ClientError) as refused:
        invoke(lambda_, unique_name)
    assert refused.value.response["Error"]["Code"] == "InvalidZipFileException"
    state = workflow_aws.log.parent  # holds the server's lambda cache
    assert not list(state.rglob("escaped.py"))  # neither outside the root nor sanitised inside
    # The package was never unpacked: no tree and no staging directory under its sha256.
    sha256 = hashlib.sha256(hostile).hexdigest()
    assert not list((state / "lambda-cache").glob(f"*{sha256[:12]}*"))


def test_reserved_concurrency_of_zero_throttles_as_lambda_does(
    workflow_aws: LocalAws, unique_name: str
) -> None:
    lambda_ = create(workflow_aws, unique_name, "probe.describe")
    lambda_.put_function_concurrency(FunctionName=unique_name, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as throttled:
        invoke(lambda_, unique_name)
    assert throttled.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


def test_an_event_invocation_answers_at_once_and_runs_in_the_background(
    workflow_aws: LocalAws, unique_name: str, tmp_path: Path
) -> None:
    import time

    lambda_ = create(workflow_aws, unique_name, "probe.write")
    target = tmp_path / "ran.txt"
    response = lambda_.invoke(
        FunctionName=unique_name,
        InvocationType="Event",
        Payload=json.dumps({"path": str(target)}),
    )
    assert response["StatusCode"] == 202
    for _ in range(100):
        if target.exists() and target.read_text():
            break
        time.sleep(0.1)
    assert len(target.read_text()) == 36  # the request id the context carried
