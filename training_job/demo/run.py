"""`python -m training_job.demo`: the main job, the whole workflow in local mode.

It runs the commands a user runs against AWS (`python -m training_job ...`, `npx sls
...`) with the local AWS standing in for AWS and the compute done here, then prints one
summary. It stops everything it started when it ends, on Ctrl-C or an error too.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from PIL import Image

from training_job import local_mode
from training_job.demo import review_step
from training_job.demo.sagemaker_role import create_sagemaker_role
from training_job.demo.summary import decision_counts, print_summary
from training_job.models import registry
from training_job.monitor.review import as_dict, review_measures, summary_lines
from training_job.serving.deployment import DEFAULT_ENDPOINT_NAME

# The local AWS the demo starts (or finds running) and the supervisor that refuses a port
# already taken: the emulator, reached through the product's one seam to it.
LOCAL_AWS = local_mode.backend("local-aws")
SUPERVISOR = local_mode.backend("supervisor")

REPO_ROOT = Path(__file__).resolve().parents[2]
ENDPOINT_NAME = DEFAULT_ENDPOINT_NAME  # what `deploy` names the endpoint by default
STAGE = "local"
STATE_MACHINE = f"scones-unlimited-{STAGE}-image-workflow"  # serverless.yml's name
STACK = f"scones-unlimited-{STAGE}"  # the Serverless Framework's stack name: service-stage
DECISIONS_TABLE = f"scones-unlimited-{STAGE}-decisions"  # serverless.yml's decisionsTable
TRAINING_CODE = REPO_ROOT / "training_job" / "code"
DRIFT_NOISE_SIGMA = 40.0  # Gaussian pixel noise of the drifted batch (uint8 scale)
CAPTURE_WAIT_SECONDS = 120  # the endpoint ships its spool every 2 s, retrying S3 for longer


@dataclass
class Demo:
    bucket: str
    port: int = LOCAL_AWS.DEFAULT_PORT
    endpoint_port: int = LOCAL_AWS.DEFAULT_ENDPOINT_PORT
    state_dir: Path = REPO_ROOT / ".local"
    out_dir: Path = REPO_ROOT / "out" / "demo"
    cache_dir: Path = REPO_ROOT / ".cache" / "demo-models"
    epochs: int | None = None
    stops: dict[str, list[str]] = field(default_factory=dict)  # what we started: its stop
    servers: ExitStack = field(default_factory=ExitStack)  # the local AWS, when we started it
    seconds: dict[str, float] = field(default_factory=dict)
    rollout_answers: dict[str, int] = field(default_factory=dict)  # variant (or failure): n
    current_step: str = ""

    # -- running commands ------------------------------------------------------------

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        print(f"\n==> {title}", flush=True)
        self.current_step = title
        began = time.monotonic()
        yield
        self.seconds[title] = round(time.monotonic() - began, 1)

    def run(self, *command: str, capture: bool = False) -> str:
        print(f"    $ {' '.join(command)}", flush=True)
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            check=True,
            text=True,
            stdout=subprocess.PIPE if capture else None,
        )
        return result.stdout or ""

    def training_job(self, *args: str, capture: bool = False) -> str:
        return self.run(sys.executable, "-m", "training_job", *args, capture=capture)

    def stop(self, name: str) -> None:
        command = self.stops.pop(name, None)
        if command is not None:
            subprocess.run(command, cwd=REPO_ROOT, check=False)

    def stop_everything_started(self) -> None:
        for name in reversed(list(self.stops)):
            self.stop(name)
        self.servers.close()  # the local AWS last: the stops above still use it

    # -- the steps -------------------------------------------------------------------

    def start_local_aws(self) -> None:
        environment = LOCAL_AWS.client_environment(self.port, endpoint_port=self.endpoint_port)
        os.environ.update(environment)
        try:
            LOCAL_AWS.wait_until_ready(LOCAL_AWS.endpoint_url(self.port), timeout=0.5)
            print(f"    using the local AWS already running on {LOCAL_AWS.endpoint_url(self.port)}")
            return
        except TimeoutError:
            pass
        print(f"    starting the local AWS on {LOCAL_AWS.endpoint_url(self.port)}", flush=True)
        self.servers.enter_context(
            LOCAL_AWS.local_aws_server(self.state_dir, self.port, endpoint_port=self.endpoint_port)
        )

    def training_key(self) -> str:
        """What a trained model depends on: the staged data, the settings, the code."""
        s3 = boto3.client("s3")
        manifest = s3.get_object(Bucket=self.bucket, Key="manifest.json")["Body"].read()
        digest = hashlib.sha256(manifest)
        digest.update(repr(self.epochs).encode())
        for path in sorted(TRAINING_CODE.glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()[:16]

    def train_or_reuse(self) -> str:
        """Train in local mode, or put back the model trained before from the same data,
        settings and code (the local AWS forgets it when it stops; the cache does not)."""
        cached = self.cache_dir / self.training_key()
        s3 = boto3.client("s3")
        if (cached / "metrics.json").is_file():
            job = f"scones-pytorch-reused-{cached.name}"
            print(f"    reusing the model trained from the same data and settings: {cached}")
            for name in ("model.tar.gz", "metrics.json"):  # metrics.json last: it marks done
                s3.upload_file(str(cached / name), self.bucket, f"models/{job}/output/{name}")
            # `train` registers what it trains; a reused model is registered as an older
            # run's output is.
            self.training_job(
                "models", "register", "--model-data",
                f"s3://{self.bucket}/models/{job}/output/model.tar.gz",
                "--manifest", f"s3://{self.bucket}/manifest.json",
            )  # fmt: skip
            return job
        job = f"scones-pytorch-demo-{time.strftime('%Y-%m-%d-%H-%M-%S')}"
        command = ["train", "--mode", "local", "--bucket", self.bucket, "--job-name", job]
        if self.epochs is not None:
            command += ["--epochs", str(self.epochs)]
        self.training_job(*command)
        partial = cached.with_name(cached.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in ("model.tar.gz", "metrics.json"):
            s3.download_file(self.bucket, f"models/{job}/output/{name}", str(partial / name))
        partial.rename(cached)  # whole or absent: an interrupted copy is never reused
        return job

    def approve(self, job: str, metrics: dict[str, Any]) -> int:
        """Approve the version the job's model became, as a person would after reading
        `models list`: the demo's reason is its test accuracy. Returns the version."""
        sm = boto3.client("sagemaker")
        # The newest of the job's versions (a local AWS kept running may hold older ones).
        version = max(
            found.version
            for found in registry.versions(sm, registry.DEFAULT_GROUP)
            if found.metadata.get("training_job") == job
        )
        self.training_job("models", "list", "--limit", "5")
        self.training_job(
            "models", "approve", str(version), "--description",
            f"approved by the demo: test accuracy {metrics['test_accuracy']:.4f}",
        )  # fmt: skip
        return version

    def deploy_endpoint(self, version: int) -> None:
        session = boto3.session.Session()
        role = create_sagemaker_role(
            session.client("iam"),
            self.bucket,
            session.region_name,
            session.client("sts").get_caller_identity()["Account"],
        )
        self.training_job(
            "deploy",
            "--mode",
            "local",
            "--bucket",
            self.bucket,
            "--role",
            role,
            "--endpoint-name",
            ENDPOINT_NAME,
            "--model-version",
            str(version),
            "--port",
            str(self.endpoint_port),
        )
        self.stops["endpoint"] = [
            sys.executable,
            "-m",
            "training_job",
            "deploy",
            "--mode",
            "local",
            "--stop",
            "--endpoint-name",
            ENDPOINT_NAME,
        ]

    def deploy_stack(self) -> None:
        self.run("npx", "sls", "deploy", "--stage", STAGE, "--param", f"bucket={self.bucket}")

    def evaluate(self) -> dict[str, Any]:
        report = self.training_job(
            "evaluate",
            "--state-machine",
            STATE_MACHINE,
            "--images",
            f"s3://{self.bucket}/test/",
            "--labels",
            f"s3://{self.bucket}/test.lst",
            "--json",
            capture=True,
        )
        result: dict[str, Any] = json.loads(report.strip().splitlines()[-1])
        print(f"    {json.dumps(result)}")
        return result

    def decisions_table(self, stack: str = STACK) -> str:
        """The stack's decisions table, from its DecisionsTableName output (moto's
        DescribeStackResource fails on this stack's resources: a 500)."""
        [described] = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
        return next(
            str(output["OutputValue"])
            for output in described.get("Outputs", [])
            if output["OutputKey"] == "DecisionsTableName"
        )

    def review_measures(self, stack: str = STACK) -> dict[str, Any]:
        """Accuracy past the gate from the audit sample, and the other review measures, from
        people's answers in the stack's decisions table."""
        measured = review_measures(self.decisions_table(stack), progress=False)
        for line in summary_lines(measured):
            print(f"    {line}")
        return as_dict(measured)

    def test_images(self) -> list[bytes]:
        s3 = boto3.client("s3")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="test/")
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        with ThreadPoolExecutor(8) as pool:
            return list(
                pool.map(
                    lambda key: s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(), keys
                )
            )

    def send_drifted_batch(self, images: list[bytes]) -> float:
        """The test images again with camera noise added, straight to the endpoint (the
        drift a monitor must catch), at 8 concurrent clients. Returns requests/s."""
        rng = np.random.default_rng(0)
        drifted = []
        for data in images:
            pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
            noisy = pixels + rng.normal(0.0, DRIFT_NOISE_SIGMA, pixels.shape)
            buffer = io.BytesIO()
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "PNG")
            drifted.append(buffer.getvalue())
        runtime = boto3.client("sagemaker-runtime")

        def invoke(body: bytes) -> None:
            runtime.invoke_endpoint(EndpointName=ENDPOINT_NAME, ContentType="image/png", Body=body)

        began = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(invoke, drifted))
        return len(drifted) / (time.monotonic() - began)

    def wait_for_captures(self) -> None:
        """Until every request the endpoint captured is in S3 (its /metrics: records
        written equal records spooled, and nothing waits in the spool). A record is spooled
        before its request is answered, so after the last answer this is all of them; the
        endpoint keeps serving (the rollout comes next)."""
        deadline = time.monotonic() + CAPTURE_WAIT_SECONDS
        while True:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.endpoint_port}/metrics", timeout=10
            ) as answer:
                values = dict(
                    line.rsplit(" ", 1)
                    for line in answer.read().decode().splitlines()
                    if line and not line.startswith("#")
                )
            spooled = float(values["endpoint_capture_records_spooled_total"])
            written = float(values["endpoint_capture_records_written_total"])
            waiting = float(values["endpoint_capture_spool_bytes"])
            if written >= spooled and waiting == 0:
                print(f"    {written:g} captured requests are in s3://{self.bucket}/data_capture/")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the endpoint's captures did not reach S3 in {CAPTURE_WAIT_SECONDS}s "
                    f"({written:g} of {spooled:g} written, {waiting:g} bytes spooled)"
                )
            time.sleep(0.5)

    def register_second_version(self, job: str, metrics: dict[str, Any]) -> int:
        """The same training output registered again, as a new version, and approved: what
        a retrained model goes through before it may be rolled out."""
        self.training_job(
            "models", "register", "--model-data",
            f"s3://{self.bucket}/models/{job}/output/model.tar.gz",
            "--manifest", f"s3://{self.bucket}/manifest.json",
        )  # fmt: skip
        return self.approve(job, metrics)

    def roll_out_second_version(self, version: int, images: list[bytes]) -> int:
        """The approved `version` onto the endpoint that serves the first one, through
        `training_job rollout` (shadow, canary with automatic rollback, all) under a
        steady load of test images, each stage printed as it happens. Returns the
        rollout's exit status; the load's failures are counted in the summary."""
        runtime = boto3.client("sagemaker-runtime")
        stop = threading.Event()
        outcomes: dict[str, int] = {}

        def load() -> None:
            for index in itertools.count():
                if stop.is_set():
                    return
                try:
                    answer = runtime.invoke_endpoint(
                        EndpointName=ENDPOINT_NAME,
                        ContentType="image/png",
                        Body=images[index % len(images)],
                    )
                    outcome = answer["InvokedProductionVariant"]
                except Exception as error:  # counted, not raised: the summary shows it
                    outcome = f"failed: {type(error).__name__}"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                time.sleep(0.05)

        client = threading.Thread(target=load, daemon=True)
        client.start()
        command = [
            sys.executable, "-m", "training_job", "rollout", "--model-version", str(version),
            "--endpoint-name", ENDPOINT_NAME, "--bucket", self.bucket,
            "--shadow-seconds", "20", "--canary-percent", "50", "--canary-seconds", "30",
            "--termination-wait-seconds", "10", "--poll-seconds", "1",
            "--alarm-period-seconds", "30", "--max-latency-ms", "5000",
        ]  # fmt: skip
        # The doubtful-share alarm compares a period's share of doubtful answers with the
        # baseline's + 0.15: on the ~10 answers a 10 s period of a 20% canary got at this
        # load (one client, ~17 requests/s), chance alone crossed it (the same model was
        # rolled back once). Half the load for 30 s gives it ~250 answers a period.
        print(f"    $ {' '.join(command)}", flush=True)
        try:
            status = subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
        finally:
            stop.set()
            client.join(60)
        self.rollout_answers = outcomes
        return status

    def monitor_report(self) -> dict[str, Any]:
        report_dir = self.out_dir / "monitoring"
        self.training_job(
            "monitor",
            "report",
            "--captures",
            f"s3://{self.bucket}/data_capture/{ENDPOINT_NAME}/",
            "--window",
            "200",
            "--decisions-table",
            self.decisions_table(),
            "--out",
            str(report_dir),
        )
        summary: dict[str, Any] = json.loads((report_dir / "summary.json").read_text())
        summary["report"] = str(report_dir / "report.html")
        return summary

    # -- the whole job ---------------------------------------------------------------

    def main(self) -> int:
        """Run every step and print the summary; a command that fails ends the demo with
        its own error above and one line naming the step (exit status 1), after
        everything the demo started is stopped; a server it cannot start (its port taken)
        ends it with one line saying why."""
        try:
            return self.run_steps()
        # A port taken, a second server on the state dir.
        except SUPERVISOR.SupervisorError as refused:
            print(f"demo stopped at '{self.current_step}': {refused}", file=sys.stderr)
            return 1
        except subprocess.CalledProcessError as failed:
            command = " ".join(str(part) for part in failed.cmd)
            print(
                f"\ndemo stopped at '{self.current_step}': `{command}` exited with status "
                f"{failed.returncode} (its error is above)",
                file=sys.stderr,
            )
            return 1

    def run_steps(self) -> int:
        began = time.monotonic()
        try:
            with self.step("start the local AWS"):
                self.start_local_aws()
            with self.step("stage the data"):
                self.training_job("stage", "--bucket", self.bucket)
            with self.step("train the model (local mode), or reuse the same one"):
                job = self.train_or_reuse()
                metrics = json.loads(
                    boto3.client("s3")
                    .get_object(Bucket=self.bucket, Key=f"models/{job}/output/metrics.json")["Body"]
                    .read()
                )
            with self.step("approve the trained version in the model registry"):
                version = self.approve(job, metrics)
            with self.step("deploy the approved version to the local endpoint with data capture"):
                self.deploy_endpoint(version)
            with self.step("deploy the stack: npx sls deploy --stage local"):
                self.deploy_stack()
            with self.step("run the workflow on every test image"):
                evaluation = self.evaluate()
                decisions = decision_counts(DECISIONS_TABLE)
            with self.step("a scripted reviewer answers the review queue (true labels)"):
                review = review_step.review_step(self.bucket, STACK)
            with self.step("measure accuracy past the gate from the audit sample"):
                audit = self.review_measures()
            with self.step("send a drifted batch (camera noise) to the endpoint"):
                images = self.test_images()
                throughput = self.send_drifted_batch(images)
            with self.step("wait until the endpoint's data capture is in S3"):
                self.wait_for_captures()
            with self.step("build the monitoring report"):
                monitoring = self.monitor_report()
            with self.step("register the same model again as a second version, and approve it"):
                second_version = self.register_second_version(job, metrics)
            with self.step("roll it out under load: shadow, canary, all"):
                rollout_status = self.roll_out_second_version(second_version, images)
            with self.step("stop the endpoint (flushes its data capture) and the local AWS"):
                self.stop_everything_started()
        finally:
            self.stop_everything_started()
        summary = {
            "model_version": version,
            "test_accuracy": metrics["test_accuracy"],
            "executions": evaluation["executions"],
            "passed": evaluation["succeeded"],
            "stopped_by_threshold": evaluation["failed_by_error"].get(
                "THRESHOLD_CONFIDENCE_NOT_MET", 0
            ),
            # Photos the model's familiarity check called unlike its training photos:
            # queued for a person with the reason unfamiliar, whatever the confidence.
            "unfamiliar": evaluation["failed_by_error"].get("PHOTO_UNFAMILIAR", 0),
            "gate_accuracy": evaluation["gate_accuracy"],
            "decisions": decisions,
            "review": review,
            "endpoint_requests_per_second": round(throughput, 1),
            "monitoring_windows": monitoring["windows"],
            "alerting_windows": monitoring["alerting_windows"],
            "drift_verdicts": [
                {
                    "window": window["index"],
                    "records": window["records"],
                    "alert": window["alert"],
                    "alerting_tests": [f["test"] for f in window["findings"] if f["alert"]],
                }
                for window in monitoring["window_results"]
            ],
            "audit": audit,
            "report": monitoring["report"],
            "rollout": {
                "model_version": second_version,
                "exit_status": rollout_status,
                "answers": self.rollout_answers,
            },
            "seconds": round(time.monotonic() - began, 1),
            "step_seconds": self.seconds,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print_summary(summary)
        return 0
