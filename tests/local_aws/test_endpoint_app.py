"""The local endpoint's routes (local_aws/endpoint/app.py), started as users start it
(`deploy --mode local`), over real HTTP: predictions, the Runtime API through boto3,
every bad input, overload and metrics. Its capture: test_endpoint_capture_writer.py;
its server process: test_endpoint_server.py."""

from __future__ import annotations

import concurrent.futures
import io
import json
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
import requests
from botocore.exceptions import ClientError
from PIL import Image

from contract.familiarity import CUSTOM_ATTRIBUTES_HEADER, parse_attributes
from tests import sample_model
from tests.conftest import free_port
from tests.local_aws.endpoint_helpers import (
    Endpoint,
    Model,
    deploy,
    post,
    start,
    stop,
)
from tests.training_job.registry_helpers import approve_model_data
from training_job.models import registry
from training_job.serving import capture


@pytest.fixture(scope="module")
def endpoint(model: Model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    running = start(model, tmp_path_factory.mktemp("state"), "classifier", "--workers", "2")
    yield running
    stop(running)


def test_predictions_equal_in_process_predictions(endpoint: Endpoint, model: Model) -> None:
    inference = sample_model.code_module("inference")
    loaded = inference.model_fn(str(model.model_dir))
    expected = inference.predict_fn(
        [inference.input_fn(png, "image/png") for png in model.pngs], loaded
    )
    # Concurrent clients, so the answers come from micro-batches of several sizes.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda png: post(endpoint.url, png), model.pngs))
    assert all(response.status_code == 200 for response in responses)
    assert all(r.headers["Content-Type"].startswith("application/json") for r in responses)
    served = [response.json() for response in responses]
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert [np.argmax(p) for p in served] == [np.argmax(p) for p in expected]


def test_boto3_invoke_endpoint_reaches_it_through_the_runtime_endpoint_url(
    endpoint: Endpoint, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint.url)
    runtime = boto3.client("sagemaker-runtime")
    response = runtime.invoke_endpoint(
        EndpointName=endpoint.name,
        ContentType="image/png",
        Body=model.pngs[0],
        InferenceId="order-42",
    )
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "v1"  # the registered version it serves
    probabilities = json.loads(response["Body"].read())
    assert len(probabilities) == 2 and sum(probabilities) == pytest.approx(1.0, abs=1e-6)

    with pytest.raises(ClientError) as unknown:
        runtime.invoke_endpoint(EndpointName="no-such", ContentType="image/png", Body=b"x")
    assert unknown.value.response["Error"]["Code"] == "ValidationError"
    assert unknown.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Endpoint no-such of account" in unknown.value.response["Error"]["Message"]

    with pytest.raises(runtime.exceptions.ModelError) as refused:
        runtime.invoke_endpoint(EndpointName=endpoint.name, ContentType="text/csv", Body=b"1,2")
    assert refused.value.response["OriginalStatusCode"] == 415
    assert "UnsupportedMediaType" in refused.value.response["OriginalMessage"]

    with pytest.raises(runtime.exceptions.ModelError) as not_image:
        runtime.invoke_endpoint(EndpointName=endpoint.name, ContentType="image/png", Body=b"x")
    assert not_image.value.response["OriginalStatusCode"] == 415


def test_the_models_familiarity_comes_back_as_custom_attributes_beside_the_same_body(
    endpoint: Endpoint, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: SageMaker forwards the container's X-Amzn-SageMaker-Custom-Attributes
    verbatim as InvokeEndpoint's CustomAttributes (SageMaker Runtime API reference,
    InvokeEndpoint: at most 1024 visible US-ASCII characters, set by the model's code); the
    body stays the JSON list of two probabilities."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint.url)
    response = boto3.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=endpoint.name, ContentType="image/png", Body=model.pngs[0]
    )
    probabilities = json.loads(response["Body"].read())
    assert isinstance(probabilities, list) and len(probabilities) == 2
    parsed = parse_attributes(response["CustomAttributes"])
    assert parsed is not None and 0 < parsed[0] <= 1
    # The container's own route answers with the same header.
    direct = post(endpoint.url, model.pngs[0])
    assert parse_attributes(direct.headers[CUSTOM_ATTRIBUTES_HEADER]) == parsed
    assert direct.json() == pytest.approx(probabilities)


def test_the_runtime_api_refuses_a_body_over_6_mb_as_aws_does(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # InvokeEndpoint's body limit is 6 MB (botocore's BodyBlob max, 6,291,456 bytes); AWS
    # answers 413 itself, with no error type, before any container sees the request.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint.url)
    runtime = boto3.client("sagemaker-runtime")
    with pytest.raises(ClientError) as too_large:
        runtime.invoke_endpoint(
            EndpointName=endpoint.name, ContentType="image/png", Body=b"\x00" * (6291456 + 1)
        )
    error = too_large.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["Error"]["Code"] == "413"
    assert error["Error"]["Message"] == "HTTP content length exceeded 6291456 bytes."
    # At the limit the body reaches the container, which judges its bytes.
    with pytest.raises(runtime.exceptions.ModelError) as at_limit:
        runtime.invoke_endpoint(
            EndpointName=endpoint.name, ContentType="image/png", Body=b"\x00" * 6291456
        )
    assert at_limit.value.response["OriginalStatusCode"] == 415


def phone_photo() -> bytes:
    """A 12 MP phone JPEG of a few MB, stored sideways with EXIF orientation 6."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3024 // 8, 4032 // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((4032, 3024), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def test_a_phone_photo_is_classified_through_the_runtime_api(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = phone_photo()
    assert 2_000_000 < len(photo) < 6291456
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint.url)
    response = boto3.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=endpoint.name, ContentType="image/jpeg", Body=photo
    )
    probabilities = json.loads(response["Body"].read())
    assert len(probabilities) == 2 and sum(probabilities) == pytest.approx(1.0, abs=1e-6)


def test_a_png_declaring_6320_by_6320_rgba_is_refused_with_413(endpoint: Endpoint) -> None:
    # Issue 12: this 155 KB PNG cost 1.3 s of CPU and 900 MB per request.
    buffer = io.BytesIO()
    Image.new("RGBA", (6320, 6320)).save(buffer, format="PNG")
    response = post(endpoint.url, buffer.getvalue())
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"
    assert "PNG image of 6320x6320 pixels is over the limit" in response.json()["message"]


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/json, text/csv", 200),
        ("application/*", 200),
        ("application/json, text/plain, */*", 200),
        ("*/*", 200),
        ("text/csv", 406),
        ("application/json;q=0", 406),
        ("application/json;q=0, */*", 406),
    ],
)
def test_accept_is_read_as_http_defines_it(
    endpoint: Endpoint, model: Model, accept: str, status: int
) -> None:
    response = requests.post(
        f"{endpoint.url}/invocations",
        data=model.pngs[0],
        headers={"Content-Type": "image/png", "Accept": accept},
        timeout=30,
    )
    assert response.status_code == status
    if status == 200:
        assert response.headers["Content-Type"].startswith("application/json")
        assert len(response.json()) == 2
    else:
        assert response.json()["error"] == "NotAcceptable"


def test_errors_carry_no_object_reprs_and_no_unbounded_input(endpoint: Endpoint) -> None:
    responses = [
        post(endpoint.url, b"\x89PNG", "image/" + "x" * 6000),
        post(endpoint.url, b"\xff\xd8\xff" + b"not a jpeg" * 100, "image/jpeg"),
        post(endpoint.url, b"GIF89a" + b"\x00" * 100, "application/x-image"),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500
        message = response.json()["message"]
        assert len(message) < 300 and "object at 0x" not in message, message


def test_the_endpoint_name_is_published_as_an_ssm_parameter(endpoint: Endpoint) -> None:
    value = boto3.client("ssm").get_parameter(Name=endpoint.parameter)["Parameter"]["Value"]
    assert value == endpoint.name


def test_ping_answers_200(endpoint: Endpoint) -> None:
    assert requests.get(f"{endpoint.url}/ping", timeout=5).status_code == 200


def _truncated_png(model: Model) -> bytes:
    return model.pngs[0][: len(model.pngs[0]) // 2]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"", "image/png", 400, "InvalidInput"),
        (b"definitely not an image", "image/png", 415, "UnsupportedMediaType"),
        ("truncated", "image/png", 400, "InvalidInput"),
        (sample_model.claimed_size_png(50_000, 50_000), "image/png", 413, "PayloadTooLarge"),
        (b"{}", "application/json", 415, "UnsupportedMediaType"),
        (b"\x89PNG", None, 415, "UnsupportedMediaType"),
        (b"\x00" * (6 * 1024 * 1024 + 1), "image/png", 413, "PayloadTooLarge"),
    ],
)
def test_bad_input_gets_a_specific_json_error_and_status(
    endpoint: Endpoint, model: Model, body: bytes | str, content_type: str | None, status: int,
    error: str,
) -> None:  # fmt: skip
    payload = _truncated_png(model) if body == "truncated" else body
    assert isinstance(payload, bytes)
    response = post(endpoint.url, payload, content_type)
    assert response.status_code == status
    document = response.json()
    assert document["error"] == error and document["message"]
    assert "Traceback" not in response.text


def test_an_image_labelled_as_json_is_a_client_error_never_counted_as_5xx(
    endpoint: Endpoint, model: Model
) -> None:
    """Issue 24 item 4: a PNG labelled application/json was answered 500 (the toolkit's
    UTF-8 decode), counted in Invocation5XXErrors; 20 of them rolled a canary back. The
    SageMaker Runtime answers a model's error as ModelError (424) with the container's
    status as OriginalStatusCode: 415 here, and only the 4XX count moves."""

    def counters() -> dict[str, float]:
        document = requests.get(f"{endpoint.url}/_local/routing", timeout=10).json()
        [variant] = document["variants"].values()
        return variant

    before = counters()
    runtime = boto3.client("sagemaker-runtime", endpoint_url=endpoint.url)
    for content_type in ("application/json", "text/csv"):
        assert post(endpoint.url, model.pngs[0], content_type).status_code == 415
        with pytest.raises(ClientError) as raised:
            runtime.invoke_endpoint(
                EndpointName=endpoint.name, Body=model.pngs[0], ContentType=content_type
            )
        assert raised.value.response["Error"]["Code"] == "ModelError"
        assert raised.value.response["OriginalStatusCode"] == 415
    after = counters()
    assert after["errors_5xx"] == before["errors_5xx"]
    assert after["errors_4xx"] == before["errors_4xx"] + 4


def _raw_request(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        return connection.recv(65536)


def test_an_oversized_content_length_is_refused_before_the_body_is_sent(
    endpoint: Endpoint,
) -> None:
    # The client promises 1 GB and sends nothing: the answer comes from the header alone.
    answer = _raw_request(
        endpoint.url,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 1000000000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(endpoint: Endpoint) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"\x00" * (128 * 1024)

    response = requests.post(
        f"{endpoint.url}/invocations",
        data=chunks(),
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"


def test_metrics_count_requests_latency_batches_and_capture(endpoint: Endpoint) -> None:
    assert post(endpoint.url, b"", "image/png").status_code == 400
    text = requests.get(f"{endpoint.url}/metrics", timeout=5).text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values['endpoint_requests_total{status="200"}'] >= 1
    assert values['endpoint_requests_total{status="400"}'] >= 1
    assert values['endpoint_requests_total{status="500"}'] == 0
    assert values["endpoint_request_duration_seconds_count"] >= 2
    assert values['endpoint_batch_size_bucket{le="+Inf"}'] >= 1
    assert "endpoint_capture_records_written_total" in values
    assert "endpoint_capture_records_dropped_total" in values


def test_overload_answers_503_with_retry_after_instead_of_queueing(
    model: Model, tmp_path: Path
) -> None:
    busy = start(model, tmp_path, "busy", "--max-queue", "1", "--max-batch", "1",
                 "--capture-sampling", "0")  # fmt: skip
    try:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(lambda png: post(busy.url, png), model.pngs[:128]))
    finally:
        stop(busy)
    statuses = {response.status_code for response in responses}
    assert statuses <= {200, 503} and statuses == {200, 503}
    rejected = next(response for response in responses if response.status_code == 503)
    assert rejected.headers["Retry-After"] == "1"
    assert rejected.json()["error"] == "ServiceUnavailable"


def test_a_deploy_that_fails_after_starting_leaves_nothing_behind(
    model: Model, tmp_path: Path
) -> None:
    """Issue 24 item 7: deploy exited 1 but left the endpoint running and answering, its
    parameter published. Here the last step (the monitoring baseline's upload) is refused
    by the bucket's policy: the endpoint is stopped and its record and parameter go."""
    s3 = boto3.client("s3")
    bucket = f"{model.bucket}-denies"
    s3.create_bucket(Bucket=bucket)
    packaged = sample_model.package_model(model.model_dir, tmp_path / "packaged.tar.gz")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(packaged) as source, tarfile.open(archive, "w:gz") as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        baseline = tarfile.TarInfo("baseline.json")  # deploy publishes it, unread
        baseline.size = 2
        target.addfile(baseline, io.BytesIO(b"{}"))
    s3.upload_file(str(archive), bucket, "models/quick-job/output/model.tar.gz")
    group = f"{bucket}-models"
    approve_model_data(f"s3://{bucket}/models/quick-job/output/model.tar.gz", group)
    deny_baseline = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/monitoring/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny_baseline))
    port, name = free_port(), "fails-late"
    parameter = f"/test/{name}/endpoint-name"
    failed = deploy(
        "--bucket", bucket, "--endpoint-name", name, "--port", str(port),
        "--state-dir", str(tmp_path / "state"), "--parameter-name", parameter,
        "--model-group", group,
        "--workers", "1",
    )  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "when calling the PutObject operation" in failed.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ping", timeout=5)
    with pytest.raises(ClientError, match="ParameterNotFound"):
        boto3.client("ssm").get_parameter(Name=parameter)
    sm = boto3.client("sagemaker")
    assert registry.deployed_packages(sm, name) == {}
    assert sm.list_models(NameContains=name)["Models"] == []


def test_a_second_start_of_a_running_endpoint_is_refused(endpoint: Endpoint, model: Model) -> None:
    again = deploy(
        "--bucket", endpoint.bucket, "--endpoint-name", endpoint.name,
        "--state-dir", str(endpoint.state_dir), "--model-group", model.group,
    )  # fmt: skip
    assert again.returncode == 1
    assert "already running" in again.stderr
    # The running endpoint's record still names its model; the refused one left none.
    sm = boto3.client("sagemaker")
    [served] = registry.deployed_packages(sm, endpoint.name).values()
    assert served == "v1"
    assert len(sm.list_models(NameContains=endpoint.name)["Models"]) == 1


def test_the_local_endpoint_is_recorded_while_it_serves_and_forgotten_when_stopped(
    model: Model, tmp_path: Path
) -> None:
    """deploy made the SageMaker model from the approved version's package and the local
    AWS records the endpoint, so `models list` marks the version it serves (variant
    v<N>); --stop removes the record, its configuration and model."""
    sm = boto3.client("sagemaker")
    running = start(model, tmp_path, "recorded", "--workers", "1", "--capture-flush-seconds", "0.2")
    try:
        version = registry.version(sm, model.group, 1)
        assert registry.deployed_packages(sm, "recorded") == {version.arn: "v1"}
        # It answers, and captures, as the variant named after the version it serves.
        answer = requests.post(
            f"{running.url}/endpoints/recorded/invocations",  # the Runtime API's route
            data=model.pngs[0],
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-Amzn-Invoked-Production-Variant"] == "v1"
        [listed] = sm.list_models(NameContains="recorded")["Models"]
        described = sm.describe_model(ModelName=listed["ModelName"])
        assert described["PrimaryContainer"] == {"ModelPackageName": version.arn}
    finally:
        stop(running)
    with pytest.raises(ClientError):
        sm.describe_endpoint(EndpointName="recorded")
    assert sm.list_models(NameContains="recorded")["Models"] == []
    keys = [
        item["Key"]
        for item in boto3.client("s3").list_objects_v2(
            Bucket=model.bucket, Prefix=f"{capture.CAPTURE_PREFIX}/recorded/"
        )["Contents"]
    ]
    assert keys and all(key.split("/")[2] == "v1" for key in keys)
