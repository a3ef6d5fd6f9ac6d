"""Training outputs registered in the local AWS's model registry, as `train` leaves them:
a model.tar.gz with its metrics.json beside it, made a version of a model group."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import boto3

from local_aws import serving_image
from training_job.models import registry


def archive_bytes(names: tuple[str, ...], extra: dict[str, bytes] | None = None) -> bytes:
    """A model.tar.gz holding `names` (deploy reads the member names, not their bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in names:
            data = (extra or {}).get(name, name.encode())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# What a `train --algorithm pytorch` job writes.
SERVABLE = archive_bytes(("model.pth", "model.json", "metrics.json", "code/inference.py"))

METRICS = {
    "test_accuracy": 0.955,
    "expected_calibration_error": 0.0312,
    "share_past_gate": 0.81,
    "accuracy_past_gate": 0.9938,
    "gate_threshold": 0.93,
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "classes": ["bicycle", "motorcycle"],
}


def put_training_output(
    bucket: str, job: str, metrics: dict[str, Any] | None = None, archive: bytes = SERVABLE
) -> str:
    """models/JOB/output/{model.tar.gz,metrics.json}; returns the model's URI."""
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=f"models/{job}/output/model.tar.gz", Body=archive)
    body = json.dumps(METRICS if metrics is None else metrics).encode()
    s3.put_object(Bucket=bucket, Key=f"models/{job}/output/metrics.json", Body=body)
    return f"s3://{bucket}/models/{job}/output/model.tar.gz"


def record_image_in(region: str) -> str:
    """What `python -m training_job image push --region REGION` leaves: the serving image
    recorded there by digest (the local AWS records one only in its clients' region)."""
    session = boto3.session.Session(region_name=region)
    return serving_image.record_local_image(session.client("ecr"), session.client("ssm"))


def register_output(
    bucket: str,
    job: str,
    group: str,
    metrics: dict[str, Any] | None = None,
    status: str | None = None,
    archive: bytes = SERVABLE,
    algorithm: str = "pytorch",
) -> registry.ModelVersion:
    """A new version of `group` from a fresh training output; approved or rejected when
    `status` says so."""
    model_data = put_training_output(bucket, job, metrics, archive)
    session = boto3.session.Session()
    s3, sm = session.client("s3"), session.client("sagemaker")
    registration = registry.registration_for_output(
        s3,
        sm,
        group=group,
        model_data=model_data,
        algorithm=algorithm,
        training_job=job,
        manifest_uri=f"s3://{bucket}/manifest.json",
        region=session.region_name,
        metrics=None if algorithm == "pytorch" else metrics,
    )
    version = registry.register(sm, s3, registration)
    if status is not None:
        version = registry.set_status(sm, version, status, f"{status} by the tests")
    return version


def approve_model_data(model_data: str, group: str) -> registry.ModelVersion:
    """An uploaded model.tar.gz (with no metrics.json) registered and approved."""
    session = boto3.session.Session()
    s3, sm = session.client("s3"), session.client("sagemaker")
    bucket = model_data.split("/")[2]
    registration = registry.registration_for_output(
        s3,
        sm,
        group=group,
        model_data=model_data,
        algorithm="pytorch",
        training_job=model_data.split("/")[-3],
        manifest_uri=f"s3://{bucket}/manifest.json",
        region=session.region_name,
        metrics={},
    )
    version = registry.register(sm, s3, registration)
    return registry.set_status(sm, version, registry.APPROVED, "approved by the tests")
