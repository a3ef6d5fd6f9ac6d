"""training_job/code/serve.py, the model server of the serving image, run as SageMaker runs
the image (`serve` as its argument, the model extracted in a directory of its own, the
SAGEMAKER_* environment) and spoken to over real HTTP on 127.0.0.1.

SageMaker's contract ("Custom Inference Code with Hosting Services",
docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html): the
container answers POST /invocations and GET /ping on port 8080 (or SAGEMAKER_BIND_TO_PORT);
/ping answers 200 with an empty body once the container can serve; SageMaker stops a
container with SIGTERM (then SIGKILL 30 s later).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from tests import rollout_models, sample_model
from tests.conftest import REPO_ROOT, free_port

SERVER = REPO_ROOT / "training_job" / "code" / "serve.py"
START_SECONDS = 300  # importing torch and loading a model on a busy machine


@dataclass(frozen=True)
class Served:
    url: str
    model_dir: Path
    pngs: list[bytes]


def extracted(archive: Path, into: Path) -> Path:
    """model.tar.gz extracted as SageMaker extracts it into /opt/ml/model."""
    into.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def start_server(model_dir: Path, port: int, **environment: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SERVER), "serve", "--model-dir", str(model_dir)],
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), **environment},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_ping(process: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        try:
            if requests.get(f"{url}/ping", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server did not pass /ping in {START_SECONDS} s")


@pytest.fixture(scope="module")
def trained(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("serve-model")
    archive = shared_data / "cifar-100-python-vehicles.tar.gz"
    return sample_model.train_quick_model(archive, work / "trained", steps=2)


@pytest.fixture(scope="module")
def served(
    trained: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("served")
    model_dir = extracted(sample_model.package_model(trained, work / "model.tar.gz"), work / "ml")
    images, _ = sample_model.load_split(shared_data / "cifar-100-python-vehicles.tar.gz", "test")
    port = free_port()
    process = start_server(model_dir, port, SAGEMAKER_MODEL_SERVER_WORKERS="2")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(process, url)
        yield Served(url, model_dir, [sample_model.png_bytes(image) for image in images[:8]])
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]  # SIGTERM is a clean stop


def invoke(served: Served, body: bytes, **headers: str) -> requests.Response:
    return requests.post(f"{served.url}/invocations", data=body, headers=headers, timeout=60)


def expected_probabilities(served: Served, png: bytes) -> list[float]:
    inference = sample_model.code_module("inference")
    loaded = inference.model_fn(str(served.model_dir))
    return list(inference.predict_fn(inference.input_fn(png, "image/png"), loaded))


def test_ping_answers_200_with_an_empty_body_once_the_model_is_loaded(served: Served) -> None:
    """AWS: "/ping ... return an HTTP 200 status code with an empty body" when healthy."""
    response = requests.get(f"{served.url}/ping", timeout=10)
    assert (response.status_code, response.content) == (200, b"")


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "image/png"},
        {"content-type": "image/png", "Accept": "*/*"},
        {"Content-Type": "image/png", "Accept": "application/json"},
        {"Content-Type": "image/png", "Accept": "application/json, text/plain, */*"},
        {"Content-Type": "application/x-image"},
    ],
)
def test_an_image_is_answered_with_the_scripts_json_probabilities(
    served: Served, headers: dict[str, str]
) -> None:
    """The body of the seed's format: a JSON list of the two probabilities, as the
    script's own four functions compute it (the server adds nothing)."""
    png = served.pngs[0]
    response = invoke(served, png, **headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    np.testing.assert_allclose(response.json(), expected_probabilities(served, png), atol=1e-6)


def test_concurrent_requests_each_get_their_own_images_answer(served: Served) -> None:
    """Micro-batched requests: each answer is its own image's, in any batch."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda png: invoke(served, png, **{"Content-Type": "image/png"}), served.pngs)
        )
    for png, response in zip(served.pngs, answers, strict=True):
        assert response.status_code == 200
        np.testing.assert_allclose(response.json(), expected_probabilities(served, png), atol=1e-5)


@pytest.mark.parametrize(
    ("body_kind", "headers", "status", "message_start"),
    [
        ("png", {"Content-Type": "image/png", "Accept": "text/csv"}, 406, "cannot answer Accept"),
        ("png", {"Content-Type": "image/gif"}, 415, "unsupported content type 'image/gif'"),
        ("png", {}, 415, "unsupported content type ''"),
        ("empty", {"Content-Type": "image/png"}, 400, "empty body"),
        # A PNG labelled as text reaches input_fn as bytes (the toolkit once decoded it as
        # UTF-8 and answered 500, which SageMaker counts in Invocation5XXErrors).
        ("png", {"Content-Type": "application/json"}, 415, "unsupported content type"),
        ("png", {"Content-Type": "text/csv"}, 415, "unsupported content type"),
    ],
)
def test_a_refused_request_keeps_its_status_and_a_json_message(
    served: Served, body_kind: str, headers: dict[str, str], status: int, message_start: str
) -> None:
    body = served.pngs[0] if body_kind == "png" else b""
    response = invoke(served, body, **headers)
    assert response.status_code == status
    document = response.json()
    assert document["message"].startswith(message_start), document
    assert document["error"] and "Traceback" not in response.text


GATED_MODEL_FN = """

import os as _os
import time as _time

_model_fn = model_fn


def model_fn(model_dir):
    while not _os.path.exists(_os.environ["TEST_LOAD_GATE"]):  # the test opens it
        _time.sleep(0.05)
    return _model_fn(model_dir)
"""


def test_ping_answers_503_while_the_model_loads_and_200_once_it_serves(
    trained: Path, tmp_path: Path
) -> None:
    """AWS: SageMaker sends traffic only once /ping answers 200; until the model is
    loaded the server answers /ping (and /invocations) 503."""
    archive = sample_model.package_model(
        trained, tmp_path / "model.tar.gz", {"inference.py": GATED_MODEL_FN}
    )
    gate = tmp_path / "gate"
    port = free_port()
    process = start_server(extracted(archive, tmp_path / "ml"), port, TEST_LOAD_GATE=str(gate))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:  # until the server listens (its model_fn waits for the gate)
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the server never listened"
            try:
                loading = requests.get(f"{url}/ping", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert loading.status_code == 503
        refused = requests.post(f"{url}/invocations", data=b"x", timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        gate.touch()
        wait_for_ping(process, url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_a_version_whose_code_does_not_import_never_passes_ping(
    trained: Path, tmp_path: Path
) -> None:
    """AWS: a container that does not answer /ping with 200 fails the deployment; the
    server exits non-zero, naming the import error."""
    archive = sample_model.package_model(
        trained, tmp_path / "model.tar.gz", rollout_models.CODE_ADDITIONS["unimportable"]
    )
    model_dir = extracted(archive, tmp_path / "ml")
    process = start_server(model_dir, free_port())
    _, stderr = process.communicate(timeout=START_SECONDS)
    assert process.returncode == 1
    assert "ModuleNotFoundError" in stderr and "a_module_this_version_does_not_ship" in stderr


def test_an_answer_slower_than_the_server_timeout_is_a_500(trained: Path, tmp_path: Path) -> None:
    """SAGEMAKER_MODEL_SERVER_TIMEOUT bounds one request's answer (the inference toolkit's
    variable; SageMaker itself waits 60 s for a container's answer)."""
    archive = sample_model.package_model(
        trained, tmp_path / "model.tar.gz", rollout_models.CODE_ADDITIONS["slow"]
    )
    port = free_port()
    process = start_server(
        extracted(archive, tmp_path / "ml"), port, SAGEMAKER_MODEL_SERVER_TIMEOUT="0.2"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(process, url)
        png = sample_model.png_bytes(np.zeros((32, 32, 3), np.uint8))
        response = requests.post(
            f"{url}/invocations", data=png, headers={"Content-Type": "image/png"}, timeout=60
        )
        assert response.status_code == 500
        assert response.json()["message"] == "the model failed on this request"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


@pytest.mark.parametrize(
    ("name", "value"),
    [("SAGEMAKER_MODEL_SERVER_WORKERS", "0"), ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "soon")],
)
def test_a_bad_setting_is_refused_by_name_before_anything_loads(
    tmp_path: Path, name: str, value: str
) -> None:
    process = start_server(tmp_path, free_port(), **{name: value})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert f"{name} must be a positive number, got {value!r}" in stderr
