"""Fixtures the launcher's tests share (test_launch.py, test_launch_reviewed.py): the
region's recorded project image, present or absent, and a job that sees one CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import boto3
import pytest

from tests.training_job.training.launch_helpers import IMAGE_DIGEST, IMAGE_REPOSITORY
from training_job.models import serving_image


@contextmanager
def image_parameter_restored() -> Iterator[Any]:
    """The region's recorded image as it was before, whatever the test did to it."""
    ssm = boto3.client("ssm")
    before = serving_image.recorded_image(ssm)
    try:
        yield ssm
    finally:
        if before is None:
            with suppress(ssm.exceptions.ParameterNotFound):
                ssm.delete_parameter(Name=serving_image.IMAGE_PARAMETER)
        else:
            ssm.put_parameter(
                Name=serving_image.IMAGE_PARAMETER, Value=before, Type="String", Overwrite=True
            )


@pytest.fixture
def recorded_image(local_aws: dict[str, str]) -> Iterator[str]:
    """The project's image, as `image push` records it in the region."""
    with image_parameter_restored() as ssm:
        yield serving_image.record_image(ssm, IMAGE_REPOSITORY, IMAGE_DIGEST)


@pytest.fixture
def no_recorded_image(local_aws: dict[str, str]) -> Iterator[None]:
    """A region where `image push` never ran."""
    with image_parameter_restored() as ssm:
        with suppress(ssm.exceptions.ParameterNotFound):
            ssm.delete_parameter(Name=serving_image.IMAGE_PARAMETER)
        yield


@pytest.fixture
def one_cpu() -> Iterator[None]:
    """The job sees one CPU (train.py counts the CPUs it may run on), so it trains on one thread."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)
