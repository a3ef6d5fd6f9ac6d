"""`python -m local_aws demo`: the main job, the whole workflow in local mode.

It runs the same commands a user runs against AWS (`python -m training_job ...`), with
the local AWS standing in for AWS, and stops everything it started, Ctrl-C included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from local_aws.server import DEFAULT_PORT, client_environment, endpoint_url, wait_until_ready

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Demo:
    bucket: str
    port: int = DEFAULT_PORT
    state_dir: Path = REPO_ROOT / ".local"
    epochs: int | None = None
    started: list[list[str]] = field(default_factory=list)  # commands that stop what we started
    timings: dict[str, float] = field(default_factory=dict)

    def step(self, title: str, command: list[str]) -> None:
        print(f"\n==> {title}\n    $ {' '.join(command)}", flush=True)
        began = time.monotonic()
        subprocess.run(command, cwd=REPO_ROOT, check=True)
        self.timings[title] = time.monotonic() - began

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def start_local_aws(self) -> None:
        url = endpoint_url(self.port)
        try:
            wait_until_ready(url, timeout=0.5)
            print(f"==> using the local AWS already running on {url}")
        except TimeoutError:
            self.step(
                "start the local AWS",
                self.python(
                    "-m",
                    "local_aws",
                    "--state-dir",
                    str(self.state_dir),
                    "up",
                    "--port",
                    str(self.port),
                ),
            )
            self.started.append(
                self.python("-m", "local_aws", "--state-dir", str(self.state_dir), "down")
            )
        os.environ.update(client_environment(self.port))

    def stop_started(self) -> None:
        for command in reversed(self.started):
            subprocess.run(command, cwd=REPO_ROOT, check=False)
        self.started.clear()

    def newest_metrics(self) -> dict[str, object]:
        s3 = boto3.client("s3")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="models/")
        objects = [obj for page in pages for obj in page.get("Contents", [])]
        metrics = [obj for obj in objects if obj["Key"].endswith("/output/metrics.json")]
        if not metrics:
            raise RuntimeError(f"no metrics.json under s3://{self.bucket}/models/")
        newest = max(metrics, key=lambda obj: obj["LastModified"])
        body = s3.get_object(Bucket=self.bucket, Key=newest["Key"])["Body"].read()
        result: dict[str, object] = json.loads(body)
        return result

    def run(self) -> int:
        began = time.monotonic()
        try:
            self.start_local_aws()
            self.step(
                "stage the data",
                self.python("-m", "training_job", "stage", "--bucket", self.bucket),
            )
            train = self.python(
                "-m", "training_job", "train", "--mode", "local", "--bucket", self.bucket
            )
            if self.epochs is not None:
                train += ["--epochs", str(self.epochs)]
            self.step("train the model (local mode)", train)
            metrics = self.newest_metrics()
        finally:
            self.stop_started()
        print("\n==> summary")
        print(f"    test accuracy   {float(metrics['test_accuracy']):.3f}")  # type: ignore[arg-type]
        print(f"    total seconds   {time.monotonic() - began:.0f}")
        return 0
