"""The model registry: every trained model is a version in a SageMaker Model Package Group.

One module reads and writes it (`train` registers, `models` lists and approves, `deploy`
picks an approved version). Each version carries what a person needs to judge it:
  - InferenceSpecification: the serving image, model.tar.gz and the image's environment,
    so a SageMaker Model made from the package (Containers=[{ModelPackageName}]) serves
    it with nothing else given; the built-in algorithm's versions carry its own image;
  - ModelMetrics.ModelQuality.Statistics: a JSON document in S3 beside the model
    (QUALITY_FILE) with the test metrics, the training data manifest and the commit;
  - CustomerMetadataProperties: the same figures as short strings (METADATA_KEYS), so a
    list shows versions side by side without reading S3;
  - MetadataProperties.CommitId: the code commit; ModelApprovalStatus
    PendingManualApproval until a person approves or rejects it (UpdateModelPackage).
Only Approved versions are deployed (`deploy` enforces it, and so does SageMaker).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from contract import images
from contract.aws_errors import error_code
from contract.s3 import S3UriError, parse_s3_object_uri
from contract.sagemaker_names import NAME_PATTERN
from training_job.errors import CommandError, UsageError
from training_job.models.serving_image import (
    ImageError,
    is_out_of_patch_image,
    require_recorded_image,
)

DEFAULT_GROUP = "scones-unlimited-classifier"
GROUP_DESCRIPTION = "Scones Unlimited bicycle/motorcycle classifier: every trained model"
QUALITY_FILE = "model-quality.json"  # beside model.tar.gz
PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
MAX_DESCRIPTION = 1024  # ApprovalDescription and ModelPackageDescription: 0-1024 characters
MAX_METADATA_VALUE = 256  # CustomerMetadataValue: 1-256 characters
# CustomerMetadataValue's pattern: letters, spaces, digits and _.:/=+-@ only.
_METADATA_UNSAFE = re.compile(r"[^\w .:/=+\-@]", re.UNICODE)
NOT_MEASURED = "n/a"
# The figures shown side by side: key in the version's metadata -> key in metrics.json.
METADATA_KEYS = {
    "test_accuracy": "test_accuracy",
    "calibration_error": "expected_calibration_error",
    "share_past_gate": "share_past_gate",
    "accuracy_past_gate": "accuracy_past_gate",
}
ALGORITHM_IMAGES = {"pytorch": "PyTorch inference", "builtin": "image-classification"}
# What our inference.py answers, for the package's record (it accepts contract.images').
RESPONSE_TYPES = ("application/json",)


class RegistryError(CommandError):
    """The registry cannot do what was asked: one line, exit status 1."""


@dataclass(frozen=True)
class ModelVersion:
    """One version of the group, as DescribeModelPackage tells it."""

    group: str
    version: int
    arn: str
    status: str
    created: str
    model_data: str
    model_data_etag: str  # the archive's S3 ETag when it was registered
    image: str
    metadata: dict[str, str]
    approval_description: str
    quality_uri: str | None
    commit: str

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> ModelVersion:
        containers = described.get("InferenceSpecification", {}).get("Containers") or [{}]
        statistics = described.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics")
        created = described.get("CreationTime")
        return cls(
            group=str(described.get("ModelPackageGroupName", "")),
            version=int(described.get("ModelPackageVersion", 0)),
            arn=str(described["ModelPackageArn"]),
            status=str(described.get("ModelApprovalStatus", PENDING)),
            created=created.strftime("%Y-%m-%d %H:%M") if created is not None else "",
            model_data=str(containers[0].get("ModelDataUrl", "")),
            model_data_etag=str(containers[0].get("ModelDataETag", "")),
            image=str(containers[0].get("Image", "")),
            metadata=dict(described.get("CustomerMetadataProperties") or {}),
            approval_description=str(described.get("ApprovalDescription") or ""),
            quality_uri=statistics.get("S3Uri") if statistics else None,
            commit=str(described.get("MetadataProperties", {}).get("CommitId", "")),
        )


def group_name(text: str) -> str:
    """`--model-group`'s type: SageMaker's rule for a group's name."""
    if not NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"invalid model group name {text[:80]!r}: 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return text


def add_group_option(parser: Any) -> None:
    """`--model-group`, the same on train, deploy and models."""
    parser.add_argument(
        "--model-group",
        type=group_name,
        default=DEFAULT_GROUP,
        help="the SageMaker model package group that holds every trained model's versions "
        "(default: %(default)s, one for the project: approval, not the group, decides what "
        "a stage may serve)",
    )


def check_description(text: str) -> str:
    """An ApprovalDescription as SageMaker takes it: at most 1,024 characters, one line;
    and not blank, though SageMaker takes an empty one: a status change needs its reason."""
    if not text.strip():
        raise UsageError("--description is empty: say why the status changes")
    if len(text) > MAX_DESCRIPTION:
        raise UsageError(
            f"--description is {len(text)} characters; SageMaker keeps at most {MAX_DESCRIPTION}"
        )
    if any(ord(character) < 32 or ord(character) == 127 for character in text):
        raise UsageError("--description must be one line of printable text")
    return text


def metadata_value(value: Any) -> str:
    """A figure or text as a CustomerMetadataValue: numbers to 4 places, other text with
    the characters SageMaker refuses replaced, cut to its 256 characters."""
    if value is None:
        return NOT_MEASURED
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{value:.4f}"
    text = _METADATA_UNSAFE.sub("_", str(value)).strip()
    return (text or NOT_MEASURED)[:MAX_METADATA_VALUE]


# --- the group ---------------------------------------------------------------------------


def ensure_group(sm: Any, group: str) -> str:
    """The group's ARN, creating the group the first time."""
    try:
        described = sm.describe_model_package_group(ModelPackageGroupName=group)
        return str(described["ModelPackageGroupArn"])
    except ClientError as error:
        if not _is_missing(error):
            raise
    print(f"creating model package group {group}")
    return str(
        sm.create_model_package_group(
            ModelPackageGroupName=group, ModelPackageGroupDescription=GROUP_DESCRIPTION
        )["ModelPackageGroupArn"]
    )


def require_group(sm: Any, group: str) -> None:
    try:
        sm.describe_model_package_group(ModelPackageGroupName=group)
    except ClientError as error:
        if _is_missing(error):
            raise RegistryError(
                f"no model group {group} in this account and region: train a model "
                "(python -m training_job train) or register one (models register)"
            ) from None
        raise


def _is_missing(error: ClientError) -> bool:
    code = error_code(error)
    message = str(error.response.get("Error", {}).get("Message", ""))
    return code in ("ValidationException", "ValidationError", "ResourceNotFound") and (
        "does not exist" in message or "not found" in message.lower()
    )


# --- registering --------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What a new version is made of."""

    group: str
    model_data: str  # s3://.../model.tar.gz
    image: str
    environment: dict[str, str]
    algorithm: str
    training_job: str
    metrics: dict[str, Any]  # metrics.json (or the built-in algorithm's final metrics)
    manifest_uri: str  # the training data manifest the job read
    commit: str  # a git commit, or "unknown: <why>"


def quality_document(registration: Registration) -> dict[str, Any]:
    """ModelMetrics' statistics: the figures, where they come from, and what they mean."""
    metrics = registration.metrics
    return {
        "training_job": registration.training_job,
        "algorithm": registration.algorithm,
        "model_data": registration.model_data,
        "training_data_manifest": registration.manifest_uri,
        "code_commit": registration.commit,
        "split": "test",
        **{name: metrics.get(source) for name, source in METADATA_KEYS.items()},
        "gate_threshold": metrics.get("gate_threshold"),
        "per_class": metrics.get("per_class"),
        "confusion_matrix": metrics.get("confusion_matrix"),
        "classes": metrics.get("classes"),
    }


def register(sm: Any, s3: Any, registration: Registration) -> ModelVersion:
    """A new PendingManualApproval version of `registration.group` (created if needed),
    with its quality document written beside the model first."""
    try:
        bucket, key = parse_s3_object_uri(registration.model_data)
    except S3UriError as error:
        raise RegistryError(f"cannot register {registration.model_data}: {error}") from None
    try:
        # What is approved is this archive: deploy refuses one changed since (its ETag).
        etag = model_data_etag(s3, bucket, key)
    except ClientError as error:
        raise RegistryError(f"cannot read {registration.model_data}: {error}") from error
    folder = key.rpartition("/")[0]
    quality_key = f"{folder}/{QUALITY_FILE}" if folder else QUALITY_FILE
    body = (json.dumps(quality_document(registration), indent=2) + "\n").encode()
    s3.put_object(Bucket=bucket, Key=quality_key, Body=body, ContentType="application/json")
    ensure_group(sm, registration.group)
    metadata = {
        name: metadata_value(registration.metrics.get(source))
        for name, source in METADATA_KEYS.items()
    }
    metadata.update(
        training_job=metadata_value(registration.training_job),
        algorithm=registration.algorithm,
        training_data_manifest=metadata_value(registration.manifest_uri),
        code_commit=metadata_value(registration.commit),
    )
    arn = sm.create_model_package(
        ModelPackageGroupName=registration.group,
        ModelPackageDescription=(
            f"{registration.algorithm} model from training job {registration.training_job}"
        )[:MAX_DESCRIPTION],
        InferenceSpecification={
            "Containers": [
                {
                    "Image": registration.image,
                    "ModelDataUrl": registration.model_data,
                    "ModelDataETag": etag,
                    "Environment": registration.environment,
                }
            ],
            "SupportedContentTypes": list(images.CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(RESPONSE_TYPES),
        },
        ModelApprovalStatus=PENDING,
        MetadataProperties={
            "CommitId": registration.commit[:1024],
            "GeneratedBy": registration.training_job[:1024],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {
                    "ContentType": "application/json",
                    "ContentDigest": f"sha256:{hashlib.sha256(body).hexdigest()}",
                    "S3Uri": f"s3://{bucket}/{quality_key}",
                }
            }
        },
        CustomerMetadataProperties=metadata,
    )["ModelPackageArn"]
    return describe(sm, arn)


def model_data_etag(s3: Any, bucket: str, key: str) -> str:
    return str(s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')


def require_unchanged(s3: Any, model_version: ModelVersion) -> None:
    """Refuse a version whose model.tar.gz was replaced or removed since it was
    registered: an approval is of the archive a person judged, not of a path that anyone
    who may write under models/ could overwrite (docs/operations.md, "Security")."""
    bucket, key = parse_s3_object_uri(model_version.model_data)
    try:
        now = model_data_etag(s3, bucket, key)
    except ClientError as error:
        raise RegistryError(
            f"version {model_version.version}'s {model_version.model_data} cannot be read: {error}"
        ) from error
    if not model_version.model_data_etag or now != model_version.model_data_etag:
        raise RegistryError(
            f"version {model_version.version}'s {model_version.model_data} changed since it "
            f"was registered (ETag {now}, registered {model_version.model_data_etag or 'none'}): "
            "refusing to serve what nobody approved; register the new archive as a new version"
        )


# --- reading ------------------------------------------------------------------------------


def describe(sm: Any, arn: str) -> ModelVersion:
    return ModelVersion.from_description(sm.describe_model_package(ModelPackageName=arn))


def summaries(sm: Any, group: str, status: str | None = None) -> list[dict[str, Any]]:
    """Every version's summary, newest first (ListModelPackages, all pages)."""
    require_group(sm, group)
    request: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
    }
    if status is not None:
        request["ModelApprovalStatus"] = status
    found: list[dict[str, Any]] = []
    for page in sm.get_paginator("list_model_packages").paginate(**request):
        found.extend(page.get("ModelPackageSummaryList", []))
    # Newest first by version number: creation times can tie within a second.
    return sorted(found, key=lambda summary: -int(summary.get("ModelPackageVersion", 0)))


def versions(sm: Any, group: str, limit: int | None = None) -> list[ModelVersion]:
    """The newest `limit` versions (all when None), each described in full."""
    chosen = summaries(sm, group)[:limit]
    return [describe(sm, str(summary["ModelPackageArn"])) for summary in chosen]


def version(sm: Any, group: str, number: int) -> ModelVersion:
    """Version `number` of `group`, or a RegistryError naming the versions there are."""
    listed = summaries(sm, group)
    for summary in listed:
        if int(summary.get("ModelPackageVersion", 0)) == number:
            return describe(sm, str(summary["ModelPackageArn"]))
    there = ", ".join(str(s.get("ModelPackageVersion")) for s in reversed(listed)) or "none"
    raise RegistryError(f"model group {group} has no version {number} (versions: {there})")


def newest_approved(sm: Any, group: str) -> ModelVersion:
    approved = summaries(sm, group, status=APPROVED)
    if not approved:
        raise RegistryError(
            f"model group {group} has no approved version: review one with `python -m "
            "training_job models list`, then `models approve VERSION --description ...`"
        )
    return describe(sm, str(approved[0]["ModelPackageArn"]))


def set_status(sm: Any, model_version: ModelVersion, status: str, description: str) -> ModelVersion:
    """Approve or reject a version (UpdateModelPackage) with the reason a person gave.
    SageMaker lets a status change either way (a rejected version may be approved later,
    an approved one rejected); the description records why, and is required."""
    if status not in (APPROVED, REJECTED):
        raise UsageError(f"a version is approved or rejected, not {status!r}")
    sm.update_model_package(
        ModelPackageArn=model_version.arn,
        ModelApprovalStatus=status,
        ApprovalDescription=check_description(description),
    )
    return describe(sm, model_version.arn)


def deployed_packages(sm: Any, endpoint_name: str) -> dict[str, str]:
    """Model package ARN -> the endpoint variant that serves it, for each variant of
    `endpoint_name` whose model was made from a package ({} when there is no endpoint)."""
    try:
        endpoint = sm.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as error:
        code = error_code(error)
        if code in ("ValidationException", "ValidationError"):
            return {}  # no such endpoint: nothing is deployed
        raise
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    served: dict[str, str] = {}
    variants = [*config.get("ProductionVariants", []), *config.get("ShadowProductionVariants", [])]
    for variant in variants:
        try:
            model = sm.describe_model(ModelName=variant["ModelName"])
        except ClientError:
            continue  # a model deleted under a live endpoint serves no package we know
        containers = model.get("Containers") or [model.get("PrimaryContainer") or {}]
        for container in containers:
            if container.get("ModelPackageName"):
                served[str(container["ModelPackageName"])] = str(variant["VariantName"])
    return served


# --- a training job's output as a version -------------------------------------------------

# What versions registered before the project's image serve (AWS's support policy).
OUT_OF_PATCH_NOTE = "AWS's PyTorch 2.6 inference container, out of patch since 2026-06-30"
MODEL_ARCHIVE = "model.tar.gz"
METRICS_FILE = "metrics.json"  # what train.py writes beside model.tar.gz
MAX_METRICS_BYTES = 16 << 20


def builtin_algorithm_image(region: str) -> str:
    """The built-in image-classification algorithm's image in `region`: its versions are
    served by the algorithm's own image, not the project's."""
    import logging
    import os

    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    import sagemaker.image_uris  # heavy: only when a version is made

    return str(sagemaker.image_uris.retrieve("image-classification", region))


def out_of_patch_warning(model_version: ModelVersion) -> str | None:
    """The warning line for a version served by an out-of-patch image, None otherwise."""
    if not is_out_of_patch_image(model_version.image):
        return None
    return (
        f"warning: version {model_version.version} of {model_version.group} serves "
        f"{OUT_OF_PATCH_NOTE} ({model_version.image}); retrain on the project's image "
        "(python -m training_job image push, then train) to serve a patched one"
    )


def read_metrics(s3: Any, model_data: str) -> dict[str, Any]:
    """metrics.json beside `model_data` (a job's output folder), as train.py wrote it."""
    bucket, key = parse_s3_object_uri(model_data)
    folder = key.rpartition("/")[0]
    metrics_key = f"{folder}/{METRICS_FILE}" if folder else METRICS_FILE
    where = f"s3://{bucket}/{metrics_key}"
    try:
        response = s3.get_object(Bucket=bucket, Key=metrics_key)
    except ClientError as error:
        raise RegistryError(f"cannot read {where}: {error}") from error
    if int(response.get("ContentLength", 0)) > MAX_METRICS_BYTES:
        raise RegistryError(f"{where} is over {MAX_METRICS_BYTES} bytes: not a metrics.json")
    try:
        metrics = json.loads(response["Body"].read(MAX_METRICS_BYTES + 1))
    except ValueError as error:
        raise RegistryError(f"{where} is not JSON: {error}") from error
    if not isinstance(metrics, dict):
        raise RegistryError(f"{where} is not a JSON object")
    return metrics


def builtin_metrics(sm: Any, training_job: str) -> dict[str, Any]:
    """The built-in algorithm writes no metrics.json: its job's final metrics instead
    (its `validation` channel is our test split, so validation:accuracy is test accuracy)."""
    try:
        job = sm.describe_training_job(TrainingJobName=training_job)
    except ClientError as error:
        raise RegistryError(f"cannot read training job {training_job}: {error}") from error
    final = {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}
    return {"test_accuracy": final.get("validation:accuracy")}


def registration_for_output(
    s3: Any,
    sm: Any,
    *,
    group: str,
    model_data: str,
    algorithm: str,
    training_job: str,
    manifest_uri: str,
    region: str,
    metrics: dict[str, Any] | None = None,
) -> Registration:
    """A Registration of a training job's model.tar.gz: its metrics from the metrics.json
    beside it unless given (from the job's final metrics for the built-in algorithm,
    which writes none), and the commit the job recorded in them."""
    if not model_data.endswith(f"/{MODEL_ARCHIVE}"):
        raise RegistryError(f"{model_data[:200]} is not a training job's {MODEL_ARCHIVE}")
    if metrics is None:
        metrics = (
            builtin_metrics(sm, training_job)
            if algorithm == "builtin"
            else read_metrics(s3, model_data)
        )
    recorded = metrics.get("git_commit")
    commit = (
        recorded
        if isinstance(recorded, str) and recorded not in ("", "unknown")
        else "unknown: the training job recorded no commit"
    )
    if algorithm == "builtin":
        image, environment = builtin_algorithm_image(region), {}
    else:
        import boto3

        try:
            image = require_recorded_image(boto3.client("ssm", region_name=region), region)
        except ImageError as error:
            raise RegistryError(str(error)) from None
        # The model server reads the program's name; the model is in /opt/ml/model.
        environment = {"SAGEMAKER_PROGRAM": "inference.py"}
    return Registration(
        group=group,
        model_data=model_data,
        image=image,
        environment=environment,
        algorithm=algorithm,
        training_job=training_job,
        metrics=metrics,
        manifest_uri=manifest_uri,
        commit=commit,
    )
