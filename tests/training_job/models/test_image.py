"""`python -m training_job image`: the serving image's build (with no container engine here,
a clear refusal), its ECR repository and scanning, its digest recorded and given to every
new PyTorch version of the registry, against the local AWS (moto's ECR and SSM).

A region of its own (TEST_REGION): the recorded image and the registry's scanning
configuration are per account and region, and the other tests register versions in the
session's region without a recorded image.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.training_job.registry_helpers import put_training_output
from training_job import provenance
from training_job.__main__ import main
from training_job.models import registry, serving_image
from training_job.serving import deploy

TEST_REGION = "eu-west-2"
# What versions registered before the project's image name (AWS's account in the region).
OLD_IMAGE = f"764974769150.dkr.ecr.{TEST_REGION}.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:" + "b" * 64,
        },
        "layers": [],
    }
)


@pytest.fixture
def clients(local_aws: dict[str, str]) -> Iterator[dict[str, Any]]:
    session = boto3.session.Session(region_name=TEST_REGION)
    made = {name: session.client(name) for name in ("ecr", "ssm", "sagemaker", "s3")}
    yield made
    with contextlib.suppress(ClientError):
        made["ssm"].delete_parameter(Name=serving_image.IMAGE_PARAMETER)
    with contextlib.suppress(ClientError):
        made["ecr"].delete_repository(repositoryName=serving_image.REPOSITORY, force=True)


@pytest.mark.parametrize("command", ["build", "push"])
def test_without_a_container_engine_the_command_names_what_is_missing(
    clients: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker, podman or buildah on it
    assert main(["image", command, "--region", TEST_REGION]) == 1
    error = capsys.readouterr().err
    assert "python -m training_job image: error: no container engine" in error
    assert "docker, podman, buildah" in error
    # Nothing was created in AWS before the engine was found missing.
    with pytest.raises(ClientError, match="RepositoryNotFoundException"):
        clients["ecr"].describe_repositories(repositoryNames=[serving_image.REPOSITORY])


def test_the_repository_is_made_scanned_on_push_with_immutable_tags_and_enhanced_scanning(
    clients: dict[str, Any],
) -> None:
    """ECR API reference: CreateRepository's imageScanningConfiguration.scanOnPush and
    imageTagMutability; PutRegistryScanningConfiguration replaces the registry's whole
    configuration (rules of repositoryFilters, filterType WILDCARD), so a rule that was
    there before stays, and ENHANCED scanning runs SCAN_ON_PUSH for our repository."""
    ecr = clients["ecr"]
    other_rule = {
        "scanFrequency": "CONTINUOUS_SCAN",
        "repositoryFilters": [{"filter": "team-*", "filterType": "WILDCARD"}],
    }
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[other_rule])
    uri = serving_image.prepare_repository(ecr)
    assert uri == serving_image.prepare_repository(ecr)  # a second push finds it as it is
    [repository] = ecr.describe_repositories(repositoryNames=[serving_image.REPOSITORY])[
        "repositories"
    ]
    assert repository["repositoryUri"] == uri and uri.endswith(f"/{serving_image.REPOSITORY}")
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["imageTagMutability"] == "IMMUTABLE"
    scanning = ecr.get_registry_scanning_configuration()["scanningConfiguration"]
    assert scanning["scanType"] == "ENHANCED"
    filters = {
        (rule["scanFrequency"], tuple(f["filter"] for f in rule["repositoryFilters"]))
        for rule in scanning["rules"]
    }
    assert filters == {
        ("CONTINUOUS_SCAN", ("team-*",)),
        ("SCAN_ON_PUSH", (serving_image.REPOSITORY,)),
    }


def test_the_pushed_digest_is_recorded_and_every_new_pytorch_version_serves_it(
    clients: dict[str, Any], unique_name: str
) -> None:
    """SageMaker: a model made from a model package (CreateModel with
    PrimaryContainer.ModelPackageName, as deploy and rollout make theirs) serves the
    package's InferenceSpecification image, so a version registered with
    REPOSITORY_URI@sha256:... is served by that digest on AWS."""
    ecr, ssm, sm, s3 = clients["ecr"], clients["ssm"], clients["sagemaker"], clients["s3"]
    uri = serving_image.prepare_repository(ecr)
    # What the engine's push ends in: the manifest under the tag (ECR's PutImage).
    ecr.put_image(
        repositoryName=serving_image.REPOSITORY, imageManifest=MANIFEST, imageTag="abc123"
    )
    digest = serving_image.pushed_digest(ecr, "abc123")
    # (AWS's digest is the manifest's sha256; moto 5.2.5 hashes an empty string.)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    recorded = serving_image.record_image(ssm, uri, digest)
    assert serving_image.recorded_image(ssm) == recorded == f"{uri}@{digest}"
    assert serving_image.is_pytorch_image(recorded)  # the local endpoint serves such versions

    versions = {}
    for algorithm in ("pytorch", "builtin"):
        bucket = f"{unique_name}-{algorithm}"
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": TEST_REGION}
        )
        model_data = put_training_output(bucket, f"job-{algorithm}", None)
        versions[algorithm] = registry.register(
            sm,
            s3,
            registry.registration_for_output(
                s3,
                sm,
                group=f"{unique_name}-{algorithm}",
                model_data=model_data,
                algorithm=algorithm,
                training_job=f"job-{algorithm}",
                manifest_uri=f"s3://{bucket}/manifest.json",
                region=TEST_REGION,
                metrics={"test_accuracy": 0.9} if algorithm == "builtin" else None,
            ),
        )
    pytorch = sm.describe_model_package(ModelPackageName=versions["pytorch"].arn)
    [container] = pytorch["InferenceSpecification"]["Containers"]
    assert container["Image"] == recorded
    assert container["Environment"] == {"SAGEMAKER_PROGRAM": "inference.py"}

    # Item 5: a built-in algorithm's version keeps that algorithm's own image.
    builtin = sm.describe_model_package(ModelPackageName=versions["builtin"].arn)
    [container] = builtin["InferenceSpecification"]["Containers"]
    assert "/image-classification:" in container["Image"]
    assert not serving_image.is_pytorch_image(container["Image"])

    # deploy --mode sagemaker and rollout create their models from the approved package.
    approved = registry.set_status(sm, versions["pytorch"], registry.APPROVED, "tested")
    assert approved.image == recorded
    deploy.create_model(sm, f"{unique_name}-model", approved, None)
    model = sm.describe_model(ModelName=f"{unique_name}-model")
    assert model["PrimaryContainer"]["ModelPackageName"] == approved.arn


def test_show_says_when_no_image_is_recorded(
    clients: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["image", "show", "--region", TEST_REGION]) == 1
    error = capsys.readouterr().err
    assert f"no serving image recorded in {TEST_REGION}" in error
    assert f"`python -m training_job image push --region {TEST_REGION}`" in error


def test_registration_without_a_recorded_image_refuses_and_registers_nothing(
    clients: dict[str, Any], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No fallback to AWS's PyTorch 2.6 serving container (out of patch since 2026-06-30,
    AWS Deep Learning Containers support policy): with no image recorded in the region,
    `models register` names the command that records one and the region, and neither a
    version nor its quality report is written."""
    sm, s3 = clients["sagemaker"], clients["s3"]
    s3.create_bucket(
        Bucket=unique_name, CreateBucketConfiguration={"LocationConstraint": TEST_REGION}
    )
    model_data = put_training_output(unique_name, "job-1", None)
    group = f"g-{unique_name}"
    argv = ["models", "register", "--model-data", model_data, "--model-group", group]
    argv += ["--manifest", f"s3://{unique_name}/manifest.json", "--region", TEST_REGION]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert f"no serving image recorded in {TEST_REGION} ({serving_image.IMAGE_PARAMETER})" in error
    assert f"python -m training_job image push --region {TEST_REGION}" in error
    with pytest.raises(ClientError, match="does not exist"):
        sm.describe_model_package_group(ModelPackageGroupName=group)
    listed = s3.list_objects_v2(Bucket=unique_name, Prefix="models/job-1/output/")
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]) == [
        "metrics.json",
        "model.tar.gz",
    ]  # no model-quality.json: nothing was half registered


def test_a_recorded_value_that_is_not_the_project_image_by_digest_is_refused(
    clients: dict[str, Any],
) -> None:
    """A tag can be moved to other content; only REPOSITORY_URI@sha256:... names what was
    tested, so a hand-edited parameter holding a tag (or another repository) is refused."""
    uri = serving_image.prepare_repository(clients["ecr"])
    for value in (f"{uri}:latest", "123456789012.dkr.ecr.eu-west-2.amazonaws.com/other@sha256:ab"):
        clients["ssm"].put_parameter(
            Name=serving_image.IMAGE_PARAMETER, Value=value, Type="String", Overwrite=True
        )
        with pytest.raises(
            serving_image.ImageError, match=r"not \.\.\./scones-model-server@sha256"
        ):
            serving_image.require_recorded_image(clients["ssm"], TEST_REGION)


def test_an_old_version_on_awss_out_of_patch_image_still_deploys_with_a_warning(
    clients: dict[str, Any], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Versions registered before the project's image name AWS's PyTorch 2.6 inference
    container; rolling back to one is a safeguard, so deploy and rollout still serve it
    (deploy.chosen_version, which both call), and `models list`, `models show` and deploy
    each say it is out of patch (AWS Deep Learning Containers support policy: 2.6's
    patches ended on 2026-06-30)."""
    sm, s3 = clients["sagemaker"], clients["s3"]
    s3.create_bucket(
        Bucket=unique_name, CreateBucketConfiguration={"LocationConstraint": TEST_REGION}
    )
    model_data = put_training_output(unique_name, "job-old", None)
    group = f"g-{unique_name}"
    registered = registry.register(
        sm,
        s3,
        registry.Registration(
            group=group,
            model_data=model_data,
            image=OLD_IMAGE,
            environment={"SAGEMAKER_PROGRAM": "inference.py"},
            algorithm="pytorch",
            training_job="job-old",
            metrics={},
            manifest_uri=f"s3://{unique_name}/manifest.json",
            commit="0123456789abcdef",
        ),
    )
    registry.set_status(sm, registered, registry.APPROVED, "the version before the image")
    capsys.readouterr()
    warning = f"warning: version 1 of {group} serves {registry.OUT_OF_PATCH_NOTE} ({OLD_IMAGE})"

    chosen = deploy.chosen_version(sm, s3, group, None)
    assert chosen.arn == registered.arn and chosen.image == OLD_IMAGE
    assert warning in capsys.readouterr().err
    deploy.create_model(sm, f"{unique_name}-model", chosen, None)
    model = sm.describe_model(ModelName=f"{unique_name}-model")
    assert model["PrimaryContainer"]["ModelPackageName"] == registered.arn

    for command in (["list"], ["show", "1"]):
        assert main(["models", *command, "--model-group", group, "--region", TEST_REGION]) == 0
        assert warning in capsys.readouterr().err


def test_build_passes_the_commit_the_image_code_comes_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stand-in `docker` on PATH (a real program that writes down its arguments): the
    build gets SCONES_GIT_COMMIT, which the Dockerfile keeps for the training jobs."""
    seen = tmp_path / "argv"
    engine = tmp_path / "docker"
    engine.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {seen}\n')
    engine.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")  # git too
    assert main(["image", "build", "--tag", "t1", "--region", TEST_REGION]) == 0
    argv = seen.read_text().splitlines()
    commit = provenance.git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit), commit
    assert argv[:3] == ["build", "--build-arg", f"SCONES_GIT_COMMIT={commit}"]
    assert argv[3:5] == ["-t", f"{serving_image.REPOSITORY}:t1"]
