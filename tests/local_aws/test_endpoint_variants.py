"""Each variant of the local endpoint runs its own version's code and model, as each
SageMaker variant runs in containers of its own (local_aws/endpoint/container.py): a
version whose code fails fails its own variant's requests, counted as its 5XX errors,
and no other variant's; a version whose code cannot be imported is refused before any
traffic reaches it. Served by `python -m local_aws.endpoint`, routed through its control
route (what the local AWS's UpdateEndpoint calls), over real HTTP.

SageMaker's rules relied on (docs.aws.amazon.com/sagemaker/latest/dg/):
- model-ab-testing.html / API_ProductionVariant: each production variant names its own
  model (its own ModelDataUrl and container) and is deployed on instances of its own.
- shadow-tests.html: the shadow variant's responses are not returned to the caller.
- monitoring-cloudwatch.html: Invocation5XXErrors counts, per EndpointName and
  VariantName, the requests where the model returned a 5xx response.
- deployment-guardrails-blue-green.html / API_UpdateEndpoint: a deployment whose new
  fleet cannot be provisioned (its container never passes the health check) fails, and
  the endpoint keeps serving the old configuration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
import torch

from local_aws.endpoint.background import RunningEndpoint, local_endpoint
from tests import rollout_models, sample_model
from tests.conftest import free_port

ENDPOINT = "variants-endpoint"
BROKEN_MODEL = """

def to_tensor(images, config):
    raise RuntimeError("this version's model.py fails on every request")
"""
# The versions served: the quick model with its code unchanged, or with one file changed.
CODE_ADDITIONS = {
    "good": None,
    "broken-inference": {"inference.py": rollout_models.BROKEN_PREDICT},
    "broken-model": {"model.py": BROKEN_MODEL},
    "unimportable": {"inference.py": rollout_models.UNIMPORTABLE},
}


@dataclass(frozen=True)
class Served:
    endpoint: RunningEndpoint
    versions: dict[str, str]  # kind -> s3:// URI of its model.tar.gz
    pngs: list[bytes]


@pytest.fixture(scope="module")
def served(
    local_aws: dict[str, str], shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    torch.set_num_threads(1)
    archive = shared_data / "cifar-100-python-vehicles.tar.gz"
    work = tmp_path_factory.mktemp("variants")
    model_dir = sample_model.train_quick_model(archive, work / "model", steps=3)
    bucket = f"variants-{os.getpid()}-{free_port()}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    versions = {}
    for kind, additions in CODE_ADDITIONS.items():
        tarball = sample_model.package_model(model_dir, work / f"{kind}.tar.gz", additions)
        s3.upload_file(str(tarball), bucket, f"models/{kind}/model.tar.gz")
        versions[kind] = f"s3://{bucket}/models/{kind}/model.tar.gz"
    images, _labels = sample_model.load_split(archive, "test")
    pngs = [sample_model.png_bytes(image) for image in images[:20]]
    options = ["--workers", "1", "--torch-threads", "1", "--endpoint-name", ENDPOINT]
    with local_endpoint(model_dir, work / "state", options, environment=local_aws) as endpoint:
        yield Served(endpoint, versions, pngs)


def _route(served: Served, routes: list[tuple[str, str]], shadow: str | None) -> dict:
    """PUT /_local/routing: (variant, kind) routes of equal weight, and a shadow kind."""
    document = {
        "routes": [
            {"variant": variant, "model_data": served.versions[kind], "weight": 1.0}
            for variant, kind in routes
        ],
        "shadow": {"variant": "v9", "model_data": served.versions[shadow]} if shadow else None,
    }
    answer = requests.put(f"{served.endpoint.url}/_local/routing", json=document, timeout=600)
    return {"status": answer.status_code, **answer.json()}


def _applied(served: Served, generation: int) -> dict:
    """The routing state once every worker serves `generation`."""
    for _ in range(3000):
        state = requests.get(f"{served.endpoint.url}/_local/routing", timeout=10).json()
        if state["applied_generation"] >= generation:
            return state
        time.sleep(0.1)
    raise AssertionError(f"generation {generation} was not applied")


def _invoke(served: Served, index: int, target: str | None = None) -> requests.Response:
    headers = {"Content-Type": "image/png"}
    if target:
        headers["X-Amzn-SageMaker-Target-Variant"] = target
    return requests.post(
        f"{served.endpoint.url}/endpoints/{ENDPOINT}/invocations",
        data=served.pngs[index % len(served.pngs)],
        headers=headers,
        timeout=120,
    )


def _counters(served: Served, variant: str) -> dict[str, float]:
    state = requests.get(f"{served.endpoint.url}/_local/routing", timeout=10).json()
    return state["variants"][variant]


@pytest.mark.parametrize("broken", ["broken-inference", "broken-model"])
def test_a_variant_whose_code_fails_fails_its_own_requests_and_no_other(
    served: Served, broken: str
) -> None:
    """Two production variants, one the good version, one the same weights with an
    inference.py (or model.py) that raises on every request: each runs its own code."""
    published = _route(served, [("v1", "good"), ("v2", broken)], None)
    assert published["status"] == 200, published
    _applied(served, published["generation"])
    before = {variant: _counters(served, variant) for variant in ("v1", "v2")}
    for index in range(5):
        good = _invoke(served, index, "v1")
        assert good.status_code == 200, good.text
        assert good.headers["X-Amzn-Invoked-Production-Variant"] == "v1"
        failed = _invoke(served, index, "v2")
        assert failed.status_code == 424, failed.text  # ModelError, as the Runtime API says
        assert failed.json()["OriginalStatusCode"] == 500
    after = {variant: _counters(served, variant) for variant in ("v1", "v2")}
    assert after["v2"]["errors_5xx"] - before["v2"]["errors_5xx"] == 5
    assert after["v2"]["invocations"] == before["v2"]["invocations"]
    assert after["v1"]["errors_5xx"] == before["v1"]["errors_5xx"]
    assert after["v1"]["invocations"] - before["v1"]["invocations"] == 5


def test_a_shadow_whose_code_fails_never_touches_the_production_answers(served: Served) -> None:
    published = _route(served, [("v1", "good")], "broken-inference")
    assert published["status"] == 200, published
    _applied(served, published["generation"])
    before = _counters(served, "v9")
    for index in range(6):
        answer = _invoke(served, index)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Amzn-Invoked-Production-Variant"] == "v1"
    for _ in range(600):  # the shadow answers its copies after production answered
        shadow = _counters(served, "v9")
        if shadow["errors_5xx"] - before["errors_5xx"] >= 6:
            break
        time.sleep(0.1)
    assert shadow["errors_5xx"] - before["errors_5xx"] == 6, shadow
    assert shadow["shadow_compared"] == before["shadow_compared"]  # an error agrees with none


def test_a_version_whose_code_cannot_be_imported_is_refused_before_any_traffic(
    served: Served,
) -> None:
    published = _route(served, [("v1", "good")], None)
    assert published["status"] == 200, published
    serving = _applied(served, published["generation"])
    refused = _route(served, [("v1", "good"), ("v2", "unimportable")], None)
    assert refused["status"] == 400, refused
    assert refused["error"] == "InvalidInput"
    assert "a_module_this_version_does_not_ship" in refused["message"], refused
    assert "production variant v2 did not pass the ping health check" in refused["message"]
    state = requests.get(f"{served.endpoint.url}/_local/routing", timeout=10).json()
    assert state["generation"] == serving["generation"]  # nothing was published
    assert [route["variant"] for route in state["routes"]] == ["v1"]
    for index in range(3):
        answer = _invoke(served, index)
        assert answer.status_code == 200, answer.text
