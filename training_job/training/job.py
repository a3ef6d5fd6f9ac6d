"""A training job as the `train` command (both modes) and the local runner
(local_aws/training.py) share it: the program it runs, where its code and its output go,
what it writes, and its plan (the data, the name, the hyperparameters, the channels)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training_job.data import reviewed_photos
from training_job.data.manifests import Manifest
from training_job.errors import CommandError
from training_job.provenance import git_commit

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO_ROOT / "training_job" / "code"
# The image's entry point, run as `container.py train` (by SageMaker, in /opt/program) or
# `container.py train --ml-root DIR` (by local mode, in the job's code/ directory).
TRAINING_PROGRAM = "container.py"
# Copied beside the program (the Dockerfile copies it into /opt/program too): inference.py
# imports contract/, and serving_code.py packs it into model.tar.gz's code/.
DEPENDENCIES = (REPO_ROOT / "contract",)
MODELS_PREFIX = "models/"
# What the script writes into its model directory, and a job copies beside model.tar.gz.
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Plan:
    """Everything about the job except where it runs."""

    bucket: str
    prefix: str
    job_name: str
    algorithm: str
    manifest: Manifest
    hyperparameters: dict[str, Any]
    reviewed: reviewed_photos.CheckedManifest | None = None

    @property
    def output_path(self) -> str:
        return f"s3://{self.bucket}/{MODELS_PREFIX}"

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def model_data(self) -> str:
        """Where the job's model.tar.gz lands (SageMaker's <output path><job>/output/)."""
        return f"{self.output_path}{self.job_name}/output/model.tar.gz"

    def channels(self) -> dict[str, str]:
        """Channel name -> S3 prefix. The built-in algorithm calls the test data
        `validation`; the script calls it `test`."""
        test = "validation" if self.algorithm == "builtin" else "test"
        channels = {
            "train": self.uri("train/"),
            "train_lst": self.uri("train.lst"),
            test: self.uri("test/"),
            f"{test}_lst": self.uri("test.lst"),
        }
        if self.reviewed is not None:
            channels["reviewed"] = self.reviewed.images_uri
            channels["reviewed_lst"] = f"s3://{self.bucket}/{self.reviewed_snapshot_key}"
        return channels

    @property
    def reviewed_snapshot_key(self) -> str:
        return reviewed_photos.snapshot_key(MODELS_PREFIX, self.job_name)

    def environment(self) -> dict[str, str]:
        """The job's environment: where its code and its reviewed photos came from."""
        reviewed = self.reviewed.environment() if self.reviewed is not None else {}
        return {"SCONES_GIT_COMMIT": git_commit(), **reviewed}


class LaunchError(CommandError):
    """The job cannot start or its result cannot be read: one line, exit status 1."""
