"""A local AWS with a local endpoint behind it, model versions in its S3, and a bounded
load through InvokeEndpoint: what the rollout's tests and benchmark run on.

Every version is registered in the local AWS's model registry and approved, the bad ones
too (an approval is a person's judgement; the rollout's alarms must still catch a version
that was approved and is bad): version 1 and 2 are the good model, 3 the constant one, 4
the erroring one, 5 the good weights with code that fails every request, 6 the good model
answering slowly, 7 code that cannot be imported, 8 a constant sure answer (VERSIONS,
tests/rollout_models.py).
The endpoint is started as users start it (`deploy --mode local`, approved version 1,
variant v1) on the port this local AWS forwards SageMaker Runtime calls to; the load goes
through the local AWS (`sagemaker-runtime` at AWS_ENDPOINT_URL), as the workflow's
classify handler calls it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import numpy as np
import torch
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from local_aws.server import free_port, local_aws_server
from tests import rollout_models, sample_model
from tests.training_job.registry_helpers import approve_model_data
from training_job.environment import overridden

REPO_ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "rollout-endpoint"
MODEL_GROUP = "rollout-models"
# The registry's version number of each kind, in the order they are registered: the
# endpoint starts on version 1, and version 2 is the same good model, a new version.
VERSIONS = {
    "serving": 1,
    "good": 2,
    "constant": 3,
    "erroring": 4,
    "broken-code": 5,
    "slow": 6,
    "unimportable": 7,
    "confident": 8,
}


@dataclass(frozen=True)
class Stack:
    bucket: str
    endpoint: str
    state_dir: Path
    versions: dict[str, str]  # kind -> s3:// URI of its model.tar.gz
    group: str  # the model package group every version is registered in (VERSIONS)
    pngs: list[bytes]
    environment: dict[str, str]
    endpoint_url: str  # the local endpoint itself (the local AWS forwards to it)


def run_command(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training_job", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def rollout_stack(work: Path, archive: Path) -> Iterator[Stack]:
    """The stack, for the length of a `with` block (the endpoint stopped on the way out)."""
    torch.set_num_threads(1)
    endpoint_port = free_port()
    with ExitStack() as stack:
        server = stack.enter_context(
            local_aws_server(work / "aws", free_port(), endpoint_port=endpoint_port)
        )
        environment = server.client_environment()
        environment["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = server.url  # through the local AWS
        stack.enter_context(overridden(environment))
        trained = sample_model.train_quick_model(archive, work / "trained", steps=3)
        images, _labels = sample_model.load_split(archive, "test")
        bucket = f"rollout-{os.getpid()}-{endpoint_port}"
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=bucket)
        versions = {}
        for kind in rollout_models.KINDS:
            path = rollout_models.make_version(trained, kind, work, images[:64])
            key = f"models/{kind}/output/model.tar.gz"
            s3.upload_file(str(path), bucket, key)
            versions[kind] = f"s3://{bucket}/{key}"
        for kind, number in VERSIONS.items():
            model_data = versions["good" if kind == "serving" else kind]
            registered = approve_model_data(model_data, MODEL_GROUP)
            assert registered.version == number, (kind, registered.version)
        state_dir = work / "endpoints"
        started = run_command(
            "deploy", "--mode", "local", "--bucket", bucket, "--model-group", MODEL_GROUP,
            "--model-version", str(VERSIONS["serving"]), "--endpoint-name", ENDPOINT,
            "--port", str(endpoint_port),
            "--workers", "1", "--torch-threads", "1", "--state-dir", str(state_dir),
            "--capture-flush-seconds", "0.5", "--no-publish-parameter",
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"the endpoint did not start: {started.stdout}{started.stderr}")
        stack.callback(
            run_command,
            "deploy", "--mode", "local", "--endpoint-name", ENDPOINT, "--state-dir",
            str(state_dir), "--stop", "--no-publish-parameter",
        )  # fmt: skip
        pngs = [sample_model.png_bytes(image) for image in images[:200]]
        endpoint_url = f"http://127.0.0.1:{endpoint_port}"
        yield Stack(
            bucket, ENDPOINT, state_dir, versions, MODEL_GROUP, pngs, environment, endpoint_url
        )


@dataclass
class LoadResult:
    """What each request got: its variant, or the error code that failed it."""

    sent: int = 0
    # In the order they completed, each with the time its request was sent (a slow
    # answer completes after requests sent later).
    answers: list[tuple[float, str]] = field(default_factory=list)  # (sent, variant)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (sent, error code)

    def variants(self) -> Counter[str]:
        return Counter(variant for _, variant in self.answers)

    def failure_codes(self) -> Counter[str]:
        return Counter(code for _, code in self.failures)

    def lost(self) -> int:
        """Requests sent with neither an answer nor an error (a client that hung)."""
        return self.sent - len(self.answers) - len(self.failures)


class Load:
    """`clients` threads each sending one request at a time (a bounded load) until
    stopped; retries are off, so every failure is seen."""

    def __init__(self, stack: Stack, clients: int = 2, pause: float = 0.0) -> None:
        self.stack = stack
        self.clients = clients
        self.pause = pause
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        for index in range(self.clients):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _run(self, index: int) -> None:
        runtime = boto3.client(
            "sagemaker-runtime",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=90),
        )
        rng = np.random.default_rng(index)
        while not self._stop.is_set():
            body = self.stack.pngs[int(rng.integers(len(self.stack.pngs)))]
            with self._lock:
                self.result.sent += 1
            sent_at = time.monotonic()
            try:
                answer = runtime.invoke_endpoint(
                    EndpointName=self.stack.endpoint,
                    ContentType="image/png",
                    Body=body,
                    InferenceId=str(uuid.uuid4()),  # as the classify handler sends one
                )
                answer["Body"].read()
                outcome = ("answer", answer["InvokedProductionVariant"])
            except ClientError as error:
                outcome = ("failure", error.response["Error"]["Code"])
            except BotoCoreError as error:
                outcome = ("failure", type(error).__name__)
            with self._lock:
                if outcome[0] == "answer":
                    self.result.answers.append((sent_at, outcome[1]))
                else:
                    self.result.failures.append((sent_at, outcome[1]))
            if self.pause:
                time.sleep(self.pause)


def invoke(stack: Stack, count: int, target_variant: str | None = None) -> Counter[str]:
    """`count` requests one after another; the variants that answered them."""
    runtime = boto3.client("sagemaker-runtime")
    extra = {"TargetVariant": target_variant} if target_variant else {}
    seen: Counter[str] = Counter()
    for index in range(count):
        answer = runtime.invoke_endpoint(
            EndpointName=stack.endpoint,
            ContentType="image/png",
            Body=stack.pngs[index % len(stack.pngs)],
            **extra,
        )
        answer["Body"].read()
        seen[answer["InvokedProductionVariant"]] += 1
    return seen
