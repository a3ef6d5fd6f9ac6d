"""The `train` command as the launcher's tests drive it, and what they read back from the
SageMaker API (test_launch.py, test_launch_reviewed.py)."""

from __future__ import annotations

from typing import Any

import boto3

from training_job.__main__ import main
from training_job.models import serving_image

ROLE = "arn:aws:iam::123456789012:role/scones-training"


IMAGE_REPOSITORY = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{serving_image.REPOSITORY}"


IMAGE_DIGEST = "sha256:" + "ab" * 32


def launch(*argv: str) -> int:
    """The `train` command through `python -m training_job`'s entry point, which prints
    its errors and turns them into exit statuses."""
    return main(["train", *argv])


def describe(job_name: str) -> dict[str, Any]:
    return boto3.client("sagemaker").describe_training_job(TrainingJobName=job_name)


def channel_uris(job: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {
        channel["ChannelName"]: (
            channel["DataSource"]["S3DataSource"]["S3Uri"],
            channel.get("ContentType"),
        )
        for channel in job["InputDataConfig"]
    }
