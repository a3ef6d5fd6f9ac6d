"""The serving image in a region: its ECR repository (created scanned, with immutable
tags), its digest recorded in the SSM parameter IMAGE_PARAMETER, and which images serve
this project's inference.py. `image push` publishes through here, `train` and `models
register` read the recorded image, and the local AWS records one of its own at start
(local_aws/serving_image.py). The ECR rules relied on are in training_job/models/image.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from contract.aws_errors import error_code
from training_job.errors import CommandError

REPOSITORY = "scones-model-server"
IMAGE_PARAMETER = "/scones-unlimited/serving-image"
REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
SCAN_FREQUENCY = "SCAN_ON_PUSH"


class ImageError(CommandError):
    """The image cannot be built or published."""


def prepare_repository(ecr: Any) -> str:
    """The repository's URI, created with scan on push and immutable tags when missing,
    and the registry's enhanced scanning extended to it (other rules kept)."""
    try:
        repository = ecr.create_repository(
            repositoryName=REPOSITORY,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
        )["repository"]
    except ClientError as error:
        if error_code(error) != "RepositoryAlreadyExistsException":
            raise
        [repository] = ecr.describe_repositories(repositoryNames=[REPOSITORY])["repositories"]
    current = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    rules = list(current.get("rules") or [])
    covered = current.get("scanType") == "ENHANCED" and any(
        any(f.get("filter") in (REPOSITORY, "*") for f in rule.get("repositoryFilters", []))
        for rule in rules
    )
    if not covered:
        kept = [rule for rule in rules if rule.get("scanFrequency") != "MANUAL"]
        ecr.put_registry_scanning_configuration(
            scanType="ENHANCED",
            rules=[
                *kept,
                {
                    "scanFrequency": SCAN_FREQUENCY,
                    "repositoryFilters": [{"filter": REPOSITORY, "filterType": "WILDCARD"}],
                },
            ],
        )
    return str(repository["repositoryUri"])


def pushed_digest(ecr: Any, tag: str) -> str:
    """The digest ECR holds for `tag` in the repository (sha256:...)."""
    try:
        [detail] = ecr.describe_images(repositoryName=REPOSITORY, imageIds=[{"imageTag": tag}])[
            "imageDetails"
        ]
    except ClientError as error:
        raise ImageError(f"ECR has no {REPOSITORY}:{tag} after the push: {error}") from error
    return str(detail["imageDigest"])


def record_image(ssm: Any, repository_uri: str, digest: str) -> str:
    """Record REPOSITORY_URI@DIGEST as the region's serving image; returns it."""
    image = f"{repository_uri}@{digest}"
    ssm.put_parameter(Name=IMAGE_PARAMETER, Value=image, Type="String", Overwrite=True)
    return image


def recorded_image(ssm: Any) -> str | None:
    """The region's recorded serving image (REPOSITORY_URI@sha256:...), None if none."""
    try:
        return str(ssm.get_parameter(Name=IMAGE_PARAMETER)["Parameter"]["Value"])
    except ClientError as error:
        if error_code(error) == "ParameterNotFound":
            return None
        raise


def is_serving_image(image: str) -> bool:
    """Whether `image` is this project's serving image, by digest."""
    name, _, digest = image.partition("@")
    return name.endswith(f"/{REPOSITORY}") and digest.startswith("sha256:")


def require_recorded_image(ssm: Any, region: str) -> str:
    """The image `push` recorded in `region` (REPOSITORY_URI@sha256:...), or an ImageError
    naming the command that records one: a PyTorch version is registered (and a training
    job that would register one is launched) only with the project's image by digest,
    never with a fallback."""
    image = recorded_image(ssm)
    if image is None:
        raise ImageError(
            f"no serving image recorded in {region} ({IMAGE_PARAMETER}): run "
            f"`python -m training_job image push --region {region}` first; a model version "
            "names the project's image by digest, and nothing else is registered"
        )
    if not is_serving_image(image):
        raise ImageError(
            f"{IMAGE_PARAMETER} in {region} holds {image[:200]!r}, not "
            f".../{REPOSITORY}@sha256:...: run `python -m training_job image push "
            f"--region {region}` to record the pushed image again"
        )
    return image


def is_pytorch_image(image: str) -> bool:
    """Whether a version's image serves our inference.py (the project's serving image, or
    AWS's PyTorch serving container of versions registered before it), not the built-in
    algorithm's: the local endpoint serves only the former."""
    return is_out_of_patch_image(image) or is_serving_image(image)


def is_out_of_patch_image(image: str) -> bool:
    """AWS's PyTorch 2.6 inference container (TorchServe), which versions registered before
    the project's image name: still served (a rollback to one is a safeguard), with a
    warning, as its patches ended on 2026-06-30."""
    return "/pytorch-inference:" in image
