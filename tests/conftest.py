"""Fixtures every test folder shares (the local AWS, unique names, the shared data), and
the fast tier: which tests `make test-fast` (`pytest -m "not slow"`) leaves out."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_aws.server import free_port as free_port  # re-exported: the tests import it here
from local_aws.server import local_aws_server
from tests.browser import browser as browser  # re-exported: a fixture for every folder
from training_job.environment import overridden

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SHARED_ARCHIVE = SHARED_DATA / "cifar-100-python-vehicles.tar.gz"


# The fixtures that start the local AWS, an endpoint or a browser, train a model or run
# `sls package`: a test that uses one, directly or through another fixture, is marked `slow`
# at collection, so the fast tier (`make test-fast`: `pytest -m "not slow"`) does none of
# that. A test that does it without a fixture carries `@pytest.mark.slow` itself.
# tests/test_fast_tier.py checks both. Name -> why it is slow.
SLOW_FIXTURES = {
    "local_aws": "starts the local AWS (moto's server) for the session",
    "workflow_aws": "starts tests/local_aws's own local AWS",
    "aws": "starts a local AWS of test_iam_sagemaker_runtime.py's own",
    "local_aws_with_endpoint_port": "starts a local AWS for the whole local workflow",
    "browser": "starts Chromium",
    "model_dir": "trains a small model (the monitor's tests, training_job/code's)",
    "staged_sample": "the training channels: a test that uses them runs train.py or the container",
    "trained": "runs train.py or trains a small model",
    "stack": "starts a local AWS and an endpoint and trains (tests/rollout_stack.py)",
    # `sls package` (tests/statemachine/packaging.py) takes 10 to 25 s a run on two cores.
    "packaged": "runs `sls package` (test_serverless_yml.py, test_classify_retries.py)",
    "with_params": "runs `sls package` with parameters (test_serverless_yml.py)",
    "definition": "runs `sls package` for the resolved definition (test_image_workflow.py)",
}


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects by the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`; fails (never skips) when it is missing, as CI must notice."""
    if not SHARED_ARCHIVE.is_file():
        pytest.fail(
            f"the shared CIFAR-100 data is missing: expected {SHARED_ARCHIVE} "
            "(see ../shared/data/README.md)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def local_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local AWS (`python -m local_aws serve`, as `make local-up` runs it) on a free
    loopback port for this test session, with boto3 pointed at it.

    Yields the client environment; it is also exported into `os.environ` for the
    session, so boto3 clients created anywhere in the tests reach it.
    """
    with local_aws_server(tmp_path_factory.mktemp("local-aws"), free_port()) as server:
        environment = server.client_environment()
        with overridden(environment):
            yield environment


@pytest.fixture
def unique_name() -> str:
    """A name no other test in the session uses (buckets, endpoints, functions)."""
    return f"test-{uuid.uuid4().hex[:12]}"


def interruptible() -> None:
    """`preexec_fn` for a child a test stops with SIGINT (Ctrl-C): SIGINT's default
    action in the child, so Python raises KeyboardInterrupt there even when the test run
    itself was started in the background (a shell's `cmd &`), which children inherit as
    an ignored SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
