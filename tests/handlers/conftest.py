"""Fixtures for the handler tests: real images, a bucket in the local AWS, and a real
HTTP server on 127.0.0.1 that speaks SageMaker Runtime's InvokeEndpoint path, recording
requests and injecting faults (RuntimeServer)."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from PIL import Image

from handlers import aws_clients


def encode_image(image_format: str, size: tuple[int, int] = (32, 32)) -> bytes:
    """A real image (a synthetic gradient, never one of the data set's images)."""
    image = Image.new("RGB", size)
    image.putdata(
        [
            (x * 255 // size[0], y * 255 // size[1], 90)
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def encode_noise(image_format: str, size: tuple[int, int], **options: object) -> bytes:
    """A real image of random pixels: what a camera's sensor noise does to compression,
    so the file is as large as a photo of that size (a gradient would compress to little)."""
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def png_image() -> bytes:
    return encode_image("PNG")


@pytest.fixture(scope="session")
def jpeg_image() -> bytes:
    return encode_image("JPEG")


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object the handlers read."""

    aws_request_id: str = "c0ffee00-0000-4000-8000-000000000001"
    function_name: str = "scones-unlimited-test-handler"


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def data_bucket(
    local_aws: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh bucket in the local AWS, configured as serialize's DATA_BUCKET."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    monkeypatch.setenv("DATA_BUCKET", unique_name)
    monkeypatch.delenv("ALLOWED_PREFIXES", raising=False)
    monkeypatch.delenv("MAX_IMAGE_BYTES", raising=False)
    # A client cached by an earlier test may point at another endpoint.
    monkeypatch.setattr(aws_clients, "_clients", {})
    yield unique_name


ANSWERING_VARIANT = "v3"  # SageMaker names the variant that answered; rollout names it v<version>


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"[0.973, 0.027]"
    headers: dict[str, str] = field(
        default_factory=lambda: {"X-Amzn-Invoked-Production-Variant": ANSWERING_VARIANT}
    )
    hang: bool = False  # read the request, then answer nothing until the server stops


def runtime_error(status: int, code: str, message: str) -> Answer:
    """An error as SageMaker Runtime sends it: the code in x-amzn-ErrorType, JSON body."""
    body = json.dumps({"message": message}).encode()
    return Answer(status, body, {"x-amzn-ErrorType": code})


@dataclass
class RuntimeServer:
    """A recorder and fault injector on SageMaker Runtime's wire, not a stand-in for the
    local endpoint (local_aws/endpoint serves real models; tests/test_workflow_local.py runs
    classify against it): it keeps every request exactly as classify sent it, and answers
    what a test scripts, including what no healthy model server produces on demand (each
    AWS error code, a 502 page, malformed bodies, a hang). `POST /endpoints/<name>/invocations`:
    an endpoint answers its `queued` answers first, one per request, then its standing
    `answers`."""

    url: str
    answers: dict[str, Answer] = field(default_factory=dict)
    queued: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(scope="session")
def runtime_server() -> Iterator[RuntimeServer]:
    state = RuntimeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            parts = self.path.split("/")
            name = parts[2] if len(parts) == 4 and parts[3] == "invocations" else ""
            state.requests.append(
                {
                    "path": self.path,
                    "endpoint": name,
                    "content_type": self.headers.get("Content-Type"),
                    "inference_id": self.headers.get("X-Amzn-SageMaker-Inference-Id"),
                    "body": body,
                }
            )
            queue = state.queued.get(name)
            answer = queue.pop(0) if queue else state.answers.get(name)
            if answer is None:
                message = f"Endpoint {name} of account 123456789012 not found."
                answer = runtime_error(400, "ValidationError", message)
            if answer.hang:
                state.stopping.wait()
                return
            self.send_response(answer.status)
            headers = {"Content-Type": "application/json", **answer.headers}
            for header, value in headers.items():
                self.send_header(header, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def endpoint(
    runtime_server: RuntimeServer, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> RuntimeServer:
    """An endpoint named `unique_name` on the runtime server, as classify's ENDPOINT_NAME."""
    runtime_server.answers[unique_name] = Answer()
    runtime_server.queued.clear()
    runtime_server.requests.clear()
    monkeypatch.setenv("ENDPOINT_NAME", unique_name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime_server.url)
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MAX_IMAGE_BYTES", raising=False)
    monkeypatch.setattr(aws_clients, "_clients", {})
    return runtime_server
