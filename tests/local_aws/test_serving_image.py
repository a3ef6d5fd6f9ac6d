"""The local AWS's serving image (local_aws/serving_image.py): recorded at start where
`python -m training_job image push` records a pushed one, named by the digest of a
manifest made from the server's sources in this checkout, so registration here names the
project's image by digest as on AWS."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local_aws import serving_image
from tests.conftest import REPO_ROOT
from tests.training_job.registry_helpers import register_output
from training_job.__main__ import main
from training_job.models.serving_image import (
    IMAGE_PARAMETER,
    REPOSITORY,
    is_serving_image,
    recorded_image,
    require_recorded_image,
)

OTHER_REGION = "eu-west-3"  # a region of this test's own: the session's record stays


def test_the_started_local_aws_has_this_checkouts_image_recorded(
    local_aws: dict[str, str], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ECR API reference, PutImage: the manifest under a tag is what a push ends in, and
    an image's digest is its manifest's (imageDigest: "the image digest of the image
    manifest"). The record is where `image push` writes it, so `image show` prints it and a
    registered PyTorch version names it."""
    assert main(["image", "show"]) == 0
    shown = capsys.readouterr().out.strip()
    sources = serving_image.sources_digest()
    manifest = serving_image.image_manifest(sources)
    ecr = boto3.client("ecr")
    [repository] = ecr.describe_repositories(repositoryNames=[REPOSITORY])["repositories"]
    digest = f"sha256:{hashlib.sha256(manifest.encode()).hexdigest()}"
    assert shown == f"{repository['repositoryUri']}@{digest}"
    assert is_serving_image(shown)
    tag = "local-" + sources.removeprefix("sha256:")[:12]
    [detail] = ecr.describe_images(repositoryName=REPOSITORY, imageIds=[{"imageTag": tag}])[
        "imageDetails"
    ]
    assert detail["imageDigest"] == digest
    # Registration reads it unchanged: the version's image is that digest.
    boto3.client("s3").create_bucket(Bucket=unique_name)
    version = register_output(unique_name, "job-1", f"g-{unique_name}")
    assert version.image == shown


def test_the_image_sources_are_the_dockerfile_and_what_it_copies_from_the_checkout() -> None:
    names = [path.relative_to(REPO_ROOT).as_posix() for path in serving_image.image_sources()]
    assert names[0] == "Dockerfile"
    assert {"training_job/code/serve.py", "requirements-serving.txt"} <= set(names)


@pytest.fixture
def other_region(local_aws: dict[str, str]) -> Iterator[dict[str, Any]]:
    session = boto3.session.Session(region_name=OTHER_REGION)
    clients = {name: session.client(name) for name in ("ecr", "ssm")}
    yield clients
    with contextlib.suppress(ClientError):
        clients["ssm"].delete_parameter(Name=IMAGE_PARAMETER)
    with contextlib.suppress(ClientError):
        clients["ecr"].delete_repository(repositoryName=REPOSITORY, force=True)


def test_a_changed_server_is_a_new_digest_and_an_unchanged_one_the_same(
    other_region: dict[str, Any], tmp_path: Path
) -> None:
    """The digest follows the server's sources: serve.py edited, a new image is recorded
    (the old one stays in ECR under its own immutable tag); a restart with the same
    sources records the same digest again."""
    copy = tmp_path / "checkout"
    for path in serving_image.image_sources():
        target = copy / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    dockerfile = copy / "Dockerfile"
    ecr, ssm = other_region["ecr"], other_region["ssm"]
    first = serving_image.record_local_image(ecr, ssm, dockerfile)
    assert serving_image.record_local_image(ecr, ssm, dockerfile) == first
    with (copy / "training_job/code/serve.py").open("a") as server:
        server.write("# changed\n")
    second = serving_image.record_local_image(ecr, ssm, dockerfile)
    assert second != first and recorded_image(ssm) == second
    assert require_recorded_image(ssm, OTHER_REGION) == second
    digests = {
        detail["imageDigest"]
        for detail in ecr.describe_images(repositoryName=REPOSITORY)["imageDetails"]
    }
    assert digests == {first.partition("@")[2], second.partition("@")[2]}


def test_the_sources_follow_the_copy_lines_globs_and_folders_as_an_engine_expands_them(
    tmp_path: Path,
) -> None:
    """Docker's COPY takes globs (filepath.Match rules) and whole folders from the build
    context; `--from=STAGE` copies from an earlier stage, not from the context."""
    for name in ("code/serve.py", "code/train.py", "code/notes.txt", "contract/a.py",
                 "contract/__pycache__/a.cpython-311.pyc", "requirements.txt"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim AS build\n"
        "COPY requirements.txt /tmp/\n"
        "FROM python:3.11-slim\n"
        "COPY --from=build /opt/venv /opt/venv\n"
        "COPY code/*.py \\\n    /opt/program/\n"
        "COPY --chown=10001 contract /opt/program/contract/\n"
    )
    names = [
        path.relative_to(tmp_path).as_posix() for path in serving_image.image_sources(dockerfile)
    ]
    assert names == [
        "Dockerfile",
        "code/serve.py",
        "code/train.py",
        "contract/a.py",
        "requirements.txt",
    ]
    before = serving_image.sources_digest(dockerfile)
    (tmp_path / "contract/a.py").write_text("changed")
    assert serving_image.sources_digest(dockerfile) != before
    (tmp_path / "code/notes.txt").write_text("not copied")
    (tmp_path / "contract/a.py").write_text("contract/a.py")
    assert serving_image.sources_digest(dockerfile) == before
