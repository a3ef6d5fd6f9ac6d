"""A local AWS of this folder's own, a scripted endpoint, the fixture project deployed, and
a small trained model approved in the registry for the local endpoint's tests.

These tests need the server to carry `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME` (the executor
passes it to the handlers) and a secret variable the handlers must *not* see, so they start
a server of their own, through the same `local_aws_server` as the shared `local_aws` fixture.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import torch
from PIL import Image

from contract.familiarity import CUSTOM_ATTRIBUTES_HEADER
from local_aws.server import local_aws_server, local_client
from tests import sample_model
from tests.conftest import REPO_ROOT, free_port
from tests.local_aws.endpoint_helpers import Model
from tests.training_job.registry_helpers import approve_model_data

FIXTURE_PROJECT = Path(__file__).resolve().parent / "fixtures" / "workflow"
SERVER_SECRET = "LOCAL_AWS_TEST_SERVER_ONLY"
STACK = "localaws-fixture-local"
IMAGES_BUCKET = "localaws-fixture-local-images"
CONFIDENT = [0.97, 0.03]
DOUBTFUL = [0.6, 0.4]
# What the scripted endpoint answers for a dark image (a night sky): confident, and the
# model's familiarity check calling it unfamiliar (contract/familiarity.py).
UNFAMILIAR = [0.99, 0.01]
UNFAMILIAR_ATTRIBUTES = "familiarity=0.0099;familiar=false"
DARK_MEAN = 40  # a decodable image whose mean pixel is below this is "unfamiliar"


def scripted_answer(body: bytes) -> tuple[list[float], str]:
    """The scripted endpoint's probabilities and custom attributes for a body."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            dark = float(np.asarray(image.convert("RGB")).mean()) < DARK_MEAN
    except (OSError, ValueError):
        dark = False
    if dark:
        return UNFAMILIAR, UNFAMILIAR_ATTRIBUTES
    return (CONFIDENT if len(body) % 2 == 0 else DOUBTFUL), ""


class EndpointHandler(BaseHTTPRequestHandler):
    """`POST /endpoints/<name>/invocations`: confident for even-sized bodies, else doubtful;
    for a dark image, confident and unfamiliar (custom attributes, as SageMaker returns the
    model's).

    Scripted on purpose, not a stand-in for the local endpoint: the fixture workflow's tests
    choose each execution's outcome by the body they upload (`b"xx"` passes the threshold),
    which a trained model cannot promise. The real endpoint behind the real workflow is
    tested in tests/test_workflow_local.py."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = self.path.startswith("/endpoints/") and self.path.endswith("/invocations")
        probabilities, attributes = scripted_answer(body)
        answer = json.dumps(probabilities).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        if attributes:
            self.send_header(CUSTOM_ATTRIBUTES_HEADER, attributes)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class LocalAws:
    environment: dict[str, str]
    log: Path

    def client(self, service: str) -> Any:
        return local_client(self.environment, service)


@pytest.fixture(scope="session")
def fake_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EndpointHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def workflow_aws(
    tmp_path_factory: pytest.TempPathFactory, fake_endpoint: str
) -> Iterator[LocalAws]:
    state = tmp_path_factory.mktemp("workflow-aws")
    environment = {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": fake_endpoint,
        "LOCAL_AWS_LAMBDA_CACHE": str(state / "lambda-cache"),
        SERVER_SECRET: "the handlers must not see this",
    }
    with local_aws_server(state, free_port(), environment=environment) as server:
        yield LocalAws(server.client_environment(), server.log)


def run_sls(project: Path, local: LocalAws, *args: str, timeout: float = 120) -> Any:
    environment = {**os.environ, **local.environment, "SLS_TELEMETRY_DISABLED": "1"}
    return subprocess.run(
        [str(REPO_ROOT / "node_modules" / ".bin" / "sls"), *args],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def deployed_project(tmp_path_factory: pytest.TempPathFactory, workflow_aws: LocalAws) -> Path:
    """The fixture project, copied out of the tree and deployed with `sls deploy`."""
    project = tmp_path_factory.mktemp("project") / "workflow"
    shutil.copytree(FIXTURE_PROJECT, project)
    # osls resolves plugins from the service's node_modules, as in the repository root.
    (project / "node_modules").symlink_to(REPO_ROOT / "node_modules")
    result = run_sls(project, workflow_aws, "deploy", "--stage", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    return project


@pytest.fixture(scope="session")
def workflow(workflow_aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The packaged stack made call by call (tests/local_aws/rendered_workflow.py), once a
    session: its table, functions and state machine carry the stage's own names, so the
    modules that run it (the IAM statements, the decision safeguards) share one."""
    # Imported here: rendered_workflow.py imports this module's LocalAws.
    from tests.local_aws.rendered_workflow import build_workflow

    return build_workflow(workflow_aws, tmp_path_factory)


@pytest.fixture(scope="module")
def model(
    local_aws: dict[str, str], shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Model:
    """A quick model of the shared data, uploaded and approved in the registry, for the
    local endpoint's tests (test_endpoint_*.py): once a module, as each module trained its own."""
    torch.set_num_threads(1)
    archive = shared_data / "cifar-100-python-vehicles.tar.gz"
    work = tmp_path_factory.mktemp("endpoint-model")
    model_dir = sample_model.train_quick_model(archive, work / "model", steps=3)
    sample_model.fit_familiarity(archive, model_dir)  # as every model trained now has
    tarball = sample_model.package_model(model_dir, work / "model.tar.gz")
    bucket = f"endpoint-{os.getpid()}-{free_port()}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(tarball), bucket, "models/quick-job/output/model.tar.gz")
    # deploy serves only an approved version of the registry.
    group = f"{bucket}-models"
    approve_model_data(f"s3://{bucket}/models/quick-job/output/model.tar.gz", group)
    images, _labels = sample_model.load_split(archive, "test")
    return Model(bucket, model_dir, [sample_model.png_bytes(image) for image in images], group)


def wait_for_execution(sfn: Any, arn: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        assert time.monotonic() < deadline, f"{arn} still running after {timeout}s"
        time.sleep(0.2)
