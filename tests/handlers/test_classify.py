"""classify against a real HTTP server on 127.0.0.1 speaking SageMaker Runtime's API."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from contract import variant_metrics
from handlers import classify
from handlers.aws_clients import aws_client
from handlers.errors import ConfigurationError, ImageTooLarge, InvalidEvent, NotAnImage
from handlers.image_source import (
    S3_CLIENT_CONFIG,
    BucketNotAllowed,
    ImageNotFound,
    KeyNotAllowed,
)
from handlers.workflow_event import INLINE_IMAGE_BYTES
from tests.conftest import free_port
from tests.handlers.conftest import (
    ANSWERING_VARIANT,
    Answer,
    LambdaContext,
    RuntimeServer,
    encode_noise,
    runtime_error,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def event(image: bytes) -> dict[str, object]:
    return {
        "image_data": base64.b64encode(image).decode(),
        "s3_bucket": "scones-unlimited-test",
        "s3_key": "test/bike_s_000001.png",
        "inferences": [],
    }


def test_the_image_is_sent_to_the_endpoint_and_its_probabilities_returned(
    endpoint: RuntimeServer,
    png_image: bytes,
    lambda_context: LambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = datetime.now(UTC)
    result = classify.handler(event(png_image), lambda_context)
    body = result["body"]
    decided_at = datetime.fromisoformat(body.pop("decided_at"))
    assert before <= decided_at <= datetime.now(UTC)
    assert body == {
        **event(png_image),
        "inferences": [0.973, 0.027],
        "endpoint": request_endpoint(endpoint),
        "variant": ANSWERING_VARIANT,
    }
    # The decision as the state machine records it (contract/decisions.py's names).
    assert result["decision"] == {
        "image": "s3://scones-unlimited-test/test/bike_s_000001.png",
        "label": "bicycle",
        "confidence": 0.973,
        "model_version": "3",
        "endpoint": request_endpoint(endpoint),
        "variant": ANSWERING_VARIANT,
        "decided_at": decided_at.isoformat(timespec="milliseconds"),
        "familiarity": None,  # the scripted answer has no custom attributes: unknown
        "dynamodb": {
            "confidence": {"N": "0.973"},
            "inferences": {"L": [{"N": "0.973"}, {"N": "0.027"}]},
            "familiarity": {"NULL": True},
        },
    }
    (request,) = endpoint.requests
    assert request["path"] == f"/endpoints/{request['endpoint']}/invocations"
    assert request["content_type"] == "image/png"
    assert request["body"] == png_image
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["label"] == "bicycle"
    assert record["confidence"] == 0.973
    assert record["s3_key"] == "test/bike_s_000001.png"
    assert record["request_id"] == lambda_context.aws_request_id


def test_the_inference_id_is_the_lambda_request_id(
    endpoint: RuntimeServer, png_image: bytes, lambda_context: LambdaContext
) -> None:
    """InvokeEndpoint's InferenceId "is added to the captured data when you enable data
    capture on the endpoint" (SageMaker API reference, runtime InvokeEndpoint; 1 to 64
    characters): the production answer and the shadow's copy share it, so `monitor
    versions` pairs them exactly. A Lambda request id is one per invocation."""
    classify.handler(event(png_image), lambda_context)
    assert endpoint.requests[-1]["inference_id"] == lambda_context.aws_request_id
    classify.handler(event(png_image))  # no context (sls invoke local): a fresh uuid
    generated = str(endpoint.requests[-1]["inference_id"])
    assert len(generated) == 36 and generated != lambda_context.aws_request_id


def _emf_documents(output: str) -> list[dict[str, Any]]:
    documents = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [document for document in documents if "_aws" in document]


@pytest.mark.parametrize(
    ("threshold", "doubtful"), [("0.93", 0.0), ("0.99", 1.0), ("", 0.0)]
)  # fmt: skip
def test_each_answer_is_logged_as_the_variants_answer_metrics_in_embedded_metric_format(
    endpoint: RuntimeServer,
    png_image: bytes,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    threshold: str,
    doubtful: float,
) -> None:
    """The doubtful share, confidence and class mix the canary alarms judge, published on
    AWS as the local endpoint publishes them locally (contract/variant_metrics.py).
    "Using the embedded metric format with Lambda" (CloudWatch user guide): Lambda sends
    what the function writes to stdout to CloudWatch Logs, which extracts metrics from
    any log event that follows the specification; no agent, no PutMetricData. The
    embedded metric format specification (CloudWatch user guide, "Specification: Embedded
    metric format"): the log event is one JSON object whose `_aws` member holds Timestamp
    (epoch milliseconds) and CloudWatchMetrics directives (Namespace, Dimensions as arrays
    of dimension-set names, Metrics with Name and Unit), and every dimension and metric a
    directive names is a member of the root, dimensions as strings, metrics as numbers."""
    monkeypatch.setenv("THRESHOLD", threshold)
    before = time.time() * 1000
    classify.handler(event(png_image))
    [document] = _emf_documents(capsys.readouterr().out)
    metadata = document["_aws"]
    assert before <= metadata["Timestamp"] <= time.time() * 1000
    [directive] = metadata["CloudWatchMetrics"]
    assert directive["Namespace"] == variant_metrics.ENDPOINT_NAMESPACE
    assert directive["Dimensions"] == [["EndpointName", "VariantName"]]
    assert document["EndpointName"] == os.environ["ENDPOINT_NAME"]
    assert document["VariantName"] == ANSWERING_VARIANT
    names = [metric["Name"] for metric in directive["Metrics"]]
    assert names == variant_metrics.answer_metrics(["bicycle", "motorcycle"])
    assert {document[name] for name in names} <= {doubtful, 0.973, 0.0, 1.0}
    assert document["DoubtfulShare"] == doubtful
    assert document["Confidence"] == 0.973
    assert (document["ClassShareBicycle"], document["ClassShareMotorcycle"]) == (1.0, 0.0)
    # The local endpoint's counters sum the very same values (one function computes both).
    assert {name: document[name] for name in names} == variant_metrics.answer_values(
        [0.973, 0.027], ["bicycle", "motorcycle"], float(threshold or "0.93")
    )


def test_an_answer_without_a_variant_publishes_no_metric(
    endpoint: RuntimeServer, png_image: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint.answers[os.environ["ENDPOINT_NAME"]] = Answer(headers={})
    classify.handler(event(png_image))
    assert _emf_documents(capsys.readouterr().out) == []


def test_a_malformed_threshold_is_a_configuration_error(
    endpoint: RuntimeServer, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THRESHOLD", "high")
    with pytest.raises(ConfigurationError, match="THRESHOLD must be a number"):
        classify.handler(event(png_image))
    assert endpoint.requests == []  # refused before the endpoint is called


def request_endpoint(endpoint: RuntimeServer) -> str:
    return str(endpoint.requests[-1]["endpoint"])


def test_an_answer_without_a_variant_is_recorded_as_unversioned(
    endpoint: RuntimeServer, png_image: bytes
) -> None:
    endpoint.answers[os.environ["ENDPOINT_NAME"]] = Answer(headers={})
    decision = classify.handler(event(png_image))["decision"]
    assert (decision["variant"], decision["model_version"]) == ("", "unversioned")


def test_a_photo_without_its_s3_location_cannot_be_decided(
    endpoint: RuntimeServer, png_image: bytes
) -> None:
    # The decision's id is the photo's S3 location; an inline image alone has none.
    with pytest.raises(InvalidEvent, match="s3_bucket and s3_key"):
        classify.handler({**event(png_image), "s3_bucket": ""})


def test_a_jpeg_is_sent_as_image_jpeg(endpoint: RuntimeServer, jpeg_image: bytes) -> None:
    classify.handler(event(jpeg_image))
    assert endpoint.requests[0]["content_type"] == "image/jpeg"


def test_serializes_return_value_is_accepted_as_the_event(
    endpoint: RuntimeServer, png_image: bytes
) -> None:
    chained = {"statusCode": 200, "body": event(png_image)}
    assert classify.handler(chained)["body"]["inferences"] == [0.973, 0.027]


def test_the_client_is_created_once_per_container(
    endpoint: RuntimeServer, png_image: bytes
) -> None:
    classify.handler(event(png_image))
    client = aws_client("sagemaker-runtime")
    classify.handler(event(png_image))
    assert aws_client("sagemaker-runtime") is client
    assert len(endpoint.requests) == 2


@pytest.mark.parametrize("name", ["", "   "])
def test_a_missing_endpoint_name_is_a_configuration_error(
    endpoint: RuntimeServer, png_image: bytes, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", name)
    with pytest.raises(ConfigurationError, match="ENDPOINT_NAME is not set"):
        classify.handler(event(png_image))
    monkeypatch.delenv("ENDPOINT_NAME")
    with pytest.raises(ConfigurationError, match="ENDPOINT_NAME is not set"):
        classify.handler(event(png_image))
    assert endpoint.requests == []


@pytest.mark.parametrize(
    "name",
    [
        "-leading-dash",
        "trailing-dash-",
        "under_score",
        "has space",
        "../../admin",
        "a" * 64,
        "{{resolve:ssm:/scones-unlimited/endpoint-name}}",
    ],
)
def test_a_malformed_endpoint_name_is_a_configuration_error(
    endpoint: RuntimeServer, png_image: bytes, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", name)
    with pytest.raises(ConfigurationError, match="not a SageMaker endpoint name"):
        classify.handler(event(png_image))
    assert endpoint.requests == []


def test_an_endpoint_name_of_63_characters_is_accepted(
    endpoint: RuntimeServer, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "a-" * 31 + "b"
    endpoint.answers[name] = Answer()
    monkeypatch.setenv("ENDPOINT_NAME", name)
    assert classify.handler(event(png_image))["statusCode"] == 200


def model_error(original_status: int, message: str) -> Answer:
    """SageMaker's answer when the model container answered `original_status` (InvokeEndpoint
    API reference, ModelError: OriginalStatusCode and OriginalMessage are the container's)."""
    body = {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
        "Message": f"Received client error ({original_status}) from primary: {message}",
        "OriginalStatusCode": original_status,
        "OriginalMessage": message,
    }
    return Answer(424, json.dumps(body).encode(), {"x-amzn-ErrorType": "ModelError"})


def test_a_model_error_is_an_endpoint_error_with_the_endpoints_message(
    endpoint: RuntimeServer, png_image: bytes, unique_name: str
) -> None:
    endpoint.answers[unique_name] = Answer(
        424,
        json.dumps({"ErrorCode": "SERVER_ERROR_FROM_MODEL", "Message": "out of memory"}).encode(),
        {"x-amzn-ErrorType": "ModelError"},
    )
    with pytest.raises(classify.EndpointError, match="ModelError: out of memory"):
        classify.handler(event(png_image))


@pytest.mark.parametrize(
    ("original_status", "error"),
    [(400, NotAnImage), (415, NotAnImage), (413, ImageTooLarge)],
    ids=["undecodable", "not-an-image", "too-many-pixels"],
)
def test_an_image_the_model_cannot_read_is_the_uploads_error_not_the_endpoints(
    endpoint: RuntimeServer,
    png_image: bytes,
    unique_name: str,
    original_status: int,
    error: type[Exception],
) -> None:
    """A truncated JPEG is a bad upload, not an endpoint outage (issue 21, item 13): the
    container's 4xx reaches classify as ModelError with that OriginalStatusCode, which
    becomes the same error serialize raises for a bad upload, never EndpointError."""
    endpoint.answers[unique_name] = model_error(original_status, "image file is truncated")
    with pytest.raises(error, match=r"could not read the image.*image file is truncated"):
        classify.handler(event(png_image))


def test_an_unknown_endpoint_is_an_endpoint_error(
    endpoint: RuntimeServer, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", "no-such-endpoint")
    with pytest.raises(classify.EndpointError, match=r"no-such-endpoint of account .* not found"):
        classify.handler(event(png_image))


def test_an_unreachable_endpoint_is_unavailable_for_the_state_machine_to_retry(
    endpoint: RuntimeServer, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(classify.EndpointUnavailable, match="Could not connect"):
        classify.handler(event(png_image))


@pytest.mark.parametrize(
    "error",
    [
        runtime_error(503, "ServiceUnavailable", "Service is unavailable"),
        runtime_error(400, "ThrottlingException", "Rate exceeded"),
        runtime_error(429, "ModelNotReadyException", "Model is not ready"),
        runtime_error(500, "InternalFailure", "An internal failure occurred"),
        Answer(502, b"<html>502 Bad Gateway</html>"),
    ],
    ids=["503", "throttled", "model-not-ready", "500", "502-html"],
)
def test_a_transient_error_is_tried_once_and_named_for_the_state_machine_to_retry(
    endpoint: RuntimeServer, png_image: bytes, unique_name: str, error: Answer
) -> None:
    # The one retrying layer is the state machine (statemachine/image_workflow.asl.yml):
    # botocore must not retry under it, so the endpoint sees exactly one request.
    endpoint.queued[unique_name] = [error]
    with pytest.raises(classify.EndpointUnavailable):
        classify.handler(event(png_image))
    assert len(endpoint.requests) == 1
    # The next invocation (the state machine's retry) gets the endpoint's answer.
    assert classify.handler(event(png_image))["body"]["inferences"] == [0.973, 0.027]
    assert len(endpoint.requests) == 2


def test_a_hung_endpoint_ends_at_the_read_timeout_with_a_named_error(
    endpoint: RuntimeServer, png_image: bytes, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read timeout of 1 s instead of the configured one keeps the test short; the
    # test below pins the configured one inside the function's timeout.
    monkeypatch.setitem(classify.ENDPOINT_CLIENT_CONFIG, "read_timeout", 1)
    endpoint.answers[unique_name] = Answer(hang=True)
    with pytest.raises(classify.EndpointTimeout, match="no answer within 1 s"):
        classify.handler(event(png_image))
    assert len(endpoint.requests) == 1  # not retried by botocore either


def test_the_client_timeouts_end_a_stalled_call_well_inside_the_functions_timeout() -> None:
    functions = yaml.safe_load((REPO_ROOT / "serverless.yml").read_text())["functions"]
    endpoint = classify.ENDPOINT_CLIENT_CONFIG
    assert endpoint["retries"]["total_max_attempts"] == 1
    endpoint_call = endpoint["connect_timeout"] + endpoint["read_timeout"]
    s3 = S3_CLIENT_CONFIG
    attempts = s3["retries"]["total_max_attempts"]
    # one S3 call that stalls on every attempt; standard mode waits at most 1 s to retry
    s3_call = attempts * (s3["connect_timeout"] + s3["read_timeout"]) + (attempts - 1)
    assert s3_call + endpoint_call <= functions["classify"]["timeout"] * 0.8
    assert s3_call < functions["serialize"]["timeout"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b'{"predictions": [0.9, 0.1]}',
        b"[]",
        b'["bicycle"]',
        b"[0.9, true]",
        b"[1.5, -0.5]",
        b"[NaN, 0.5]",
        b"[[0.9, 0.1]]",
        b"\xff\xfe",
        b"[0.5, 0.3, 0.2]",  # not one probability per label
        b"[0.99, 0.99]",  # not a distribution
        b"[0.97]",
    ],
)
def test_a_malformed_endpoint_answer_is_an_invalid_endpoint_response(
    endpoint: RuntimeServer, png_image: bytes, unique_name: str, body: bytes
) -> None:
    endpoint.answers[unique_name] = Answer(200, body)
    with pytest.raises(classify.InvalidEndpointResponse, match="endpoint's answer"):
        classify.handler(event(png_image))


def test_an_event_with_neither_image_data_nor_a_key_is_an_invalid_event(
    endpoint: RuntimeServer, data_bucket: str
) -> None:
    with pytest.raises(InvalidEvent, match="no s3_key"):
        classify.handler({"s3_bucket": data_bucket})
    assert endpoint.requests == []


def test_an_image_serialize_left_in_s3_is_read_and_sent_as_it_is(
    endpoint: RuntimeServer, data_bucket: str
) -> None:
    photo = encode_noise("JPEG", (640, 480), quality=95)  # over the inline budget
    assert len(photo) > INLINE_IMAGE_BYTES
    s3 = boto3.client("s3")
    s3.put_object(Bucket=data_bucket, Key="incoming/photo.jpg", Body=photo)
    reference = {"image_data": "", "s3_bucket": data_bucket, "s3_key": "incoming/photo.jpg"}
    result = classify.handler(reference)
    assert result["body"] == {
        **reference,
        "inferences": [0.973, 0.027],
        "endpoint": request_endpoint(endpoint),
        "variant": ANSWERING_VARIANT,
        "decided_at": result["body"]["decided_at"],
    }
    (request,) = endpoint.requests
    assert request["content_type"] == "image/jpeg"
    assert request["body"] == photo


@pytest.mark.parametrize(
    ("bucket", "key", "error"),
    [
        ("someone-elses-bucket", "incoming/photo.jpg", BucketNotAllowed),
        (None, "models/model.tar.gz", KeyNotAllowed),
        (None, "incoming/missing.jpg", ImageNotFound),
        (None, "incoming/notes.txt", NotAnImage),
    ],
)
def test_classify_reads_s3_under_the_same_rules_as_serialize(
    endpoint: RuntimeServer,
    data_bucket: str,
    bucket: str | None,
    key: str,
    error: type[Exception],
) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=data_bucket, Key="models/model.tar.gz", Body=b"\x1f\x8b model")
    s3.put_object(Bucket=data_bucket, Key="incoming/notes.txt", Body=b"GIF89a" + bytes(99))
    with pytest.raises(error):
        classify.handler({"s3_bucket": bucket or data_bucket, "s3_key": key})
    assert endpoint.requests == []


def test_an_object_over_the_limit_is_refused_before_it_is_read(
    endpoint: RuntimeServer, data_bucket: str, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("s3").put_object(Bucket=data_bucket, Key="test/a.png", Body=png_image)
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(png_image) - 1))
    with pytest.raises(ImageTooLarge, match=str(len(png_image))):
        classify.handler({"s3_bucket": data_bucket, "s3_key": "test/a.png"})
    assert endpoint.requests == []


@pytest.mark.parametrize("image_data", ["not base64!", "aGVsbG8", "aGVs\nbG8="])
def test_image_data_that_is_not_base64_is_an_invalid_event(
    endpoint: RuntimeServer, image_data: str
) -> None:
    with pytest.raises(InvalidEvent, match="base64"):
        classify.handler({"image_data": image_data})
    assert endpoint.requests == []


def test_image_data_that_is_not_an_image_is_refused(endpoint: RuntimeServer) -> None:
    with pytest.raises(NotAnImage):
        classify.handler(event(b"#!/bin/sh\nrm -rf /\n"))
    assert endpoint.requests == []


def test_an_image_over_the_limit_is_refused_before_decoding(
    endpoint: RuntimeServer, png_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(png_image) - 1))
    with pytest.raises(ImageTooLarge):
        classify.handler(event(png_image))
    monkeypatch.delenv("MAX_IMAGE_BYTES")
    with pytest.raises(ImageTooLarge, match="5242880"):
        classify.handler({"image_data": "A" * (8 * 1024 * 1024)})
    assert endpoint.requests == []


def test_importing_the_handler_does_not_import_botocore() -> None:
    code = "import sys, handlers.classify; print('botocore' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == "False", result.stderr


def test_the_models_familiarity_comes_from_the_answers_custom_attributes(
    endpoint: RuntimeServer, png_image: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 23: the body stays the list of probabilities; the familiarity travels in
    X-Amzn-SageMaker-Custom-Attributes, which botocore returns as InvokeEndpoint's
    CustomAttributes (SageMaker Runtime API reference: forwarded verbatim)."""
    endpoint.answers[request_endpoint_name(endpoint)] = Answer(
        headers={
            "X-Amzn-Invoked-Production-Variant": ANSWERING_VARIANT,
            "X-Amzn-SageMaker-Custom-Attributes": "familiarity=0.0099;familiar=false",
        }
    )
    result = classify.handler(event(png_image))
    assert result["body"]["inferences"] == [0.973, 0.027]
    assert (result["body"]["familiarity"], result["body"]["familiar"]) == (0.0099, False)
    assert result["decision"]["dynamodb"]["familiarity"] == {"N": "0.0099"}
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (record["familiarity"], record["familiar"]) == (0.0099, False)


def test_malformed_familiarity_attributes_are_an_invalid_endpoint_response(
    endpoint: RuntimeServer, png_image: bytes
) -> None:
    endpoint.answers[request_endpoint_name(endpoint)] = Answer(
        headers={"X-Amzn-SageMaker-Custom-Attributes": "familiarity=very;familiar=true"}
    )
    with pytest.raises(classify.InvalidEndpointResponse, match="familiarity"):
        classify.handler(event(png_image))


def request_endpoint_name(endpoint: RuntimeServer) -> str:
    return os.environ["ENDPOINT_NAME"]
