"""A training job, wherever it runs: what it runs (the image's program and its sources),
its name's rule, its plan (data channels, output, hyperparameters, environment) and what
it writes beside its model. `train` makes the plan (launch.py); SageMaker
(sagemaker_job.py) or the local training runner (local_aws/training.py, through
training_job/local_mode.py) runs it."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training_job.data import reviewed_photos
from training_job.data.manifests import Manifest
from training_job.errors import CommandError

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO_ROOT / "training_job" / "code"
# The image's entry point, run as `container.py train` (by SageMaker, in /opt/program) or
# `container.py train --ml-root DIR` (by local mode, in the job's code/ directory).
TRAINING_PROGRAM = "container.py"
# Copied beside the program (the Dockerfile copies it into /opt/program too): inference.py
# imports contract/, and serving_code.py packs it into model.tar.gz's code/.
DEPENDENCIES = (REPO_ROOT / "contract",)
MODELS_PREFIX = "models/"
ALGORITHMS = ("pytorch", "builtin")
# What the script writes into its model directory, and a job copies beside model.tar.gz.
METRICS_FILE = "metrics.json"
# SageMaker's rule for a training job's name (local_aws/training.py enforces it too).
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class LaunchError(CommandError):
    """The job cannot start or its result cannot be read: one line, exit status 1."""


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


def git_commit() -> str:
    """The commit the code came from, `-dirty` when tracked files differ from it, or
    `unknown: <why>` (no git, not a repository) so a reader sees why there is none."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except FileNotFoundError:
        return "unknown: git is not installed"
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown: git failed ({type(error).__name__})"
    commit = head.stdout.strip()
    if head.returncode != 0 or not commit:
        return f"unknown: {REPO_ROOT.name} is not a git repository with a commit"
    return f"{commit}-dirty" if dirty else commit
