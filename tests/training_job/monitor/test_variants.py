"""`monitor check` and `monitor report` after rollouts: each variant's captures read apart
and judged against the baseline of the model version that answered them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from tests.training_job.monitor.conftest import Vehicles, capture_lines, model_archive
from training_job.__main__ import main
from training_job.monitor.variants import variant_of

HOUR = "2026/11/24/09"


@pytest.fixture
def bucket(local_aws: dict[str, str], unique_name: str, model_dir: Path) -> str:
    """A bucket holding the model of the first training job."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_object(
        Bucket=unique_name, Key="models/job-1/output/model.tar.gz", Body=model_archive(model_dir)
    )
    return unique_name


@pytest.fixture
def group(local_aws: dict[str, str], unique_name: str) -> str:
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName=unique_name)
    return unique_name


def register(group: str, model_data: str, approved: bool) -> int:
    """A version of `group` serving `model_data`; its number."""
    sm = boto3.client("sagemaker")
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={"Containers": [{"Image": "local", "ModelDataUrl": model_data}]},
    )["ModelPackageArn"]
    if approved:
        sm.update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="tested"
        )
    return int(sm.describe_model_package(ModelPackageName=arn)["ModelPackageVersion"])


def put_variant(bucket: str, endpoint: str, variant: str, minute: int, lines: list[bytes]) -> None:
    key = f"data_capture/{endpoint}/{variant}/{HOUR}/{minute:02d}-00-000-x.jsonl"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"".join(lines))


def serve(endpoint: str, production: str, shadow: str | None = None) -> None:
    """The endpoint in the local AWS with these variants (never invoked here)."""
    sm = boto3.client("sagemaker")
    summaries = []
    for variant in [production] + ([shadow] if shadow else []):
        model = f"{endpoint}-{variant}"
        sm.create_model(
            ModelName=model,
            ExecutionRoleArn="arn:aws:iam::123456789012:role/test",
            PrimaryContainer={"Image": "local", "ModelDataUrl": "s3://b/model.tar.gz"},
        )
        summaries.append(
            {
                "VariantName": variant,
                "ModelName": model,
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 1,
            }
        )
    request = {"EndpointConfigName": endpoint, "ProductionVariants": summaries[:1]}
    if shadow:
        request["ShadowProductionVariants"] = summaries[1:]
    sm.create_endpoint_config(**request)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)


def doubtful_baseline_model(model_dir: Path, into: Path) -> Path:
    """The same network with a baseline of a model that doubted every validation image
    ([0.5, 0.5]): a confident model's traffic is far from it."""
    shutil.copytree(model_dir, into)
    document = json.loads((into / "baseline.json").read_text())
    count = len(document["probabilities"])
    document["probabilities"] = [[0.5, 0.5]] * count
    document["confidences"] = [0.5] * count
    document["class_counts"] = {"bicycle": count, "motorcycle": 0}
    (into / "baseline.json").write_text(json.dumps(document))
    return into


def test_check_judges_each_version_against_its_own_baseline_not_the_newest_trained(
    bucket: str,
    group: str,
    model_dir: Path,
    tmp_path: Path,
    vehicles: Vehicles,
    predict,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Version 1 serves; version 2 was trained after it (newer, not approved) with another
    baseline. v1's traffic is judged against v1's baseline: the variant names the version
    (contract.decisions.variant_for_version), and the version its artifact
    (DescribeModelPackage's InferenceSpecification.Containers[].ModelDataUrl)."""
    s3 = boto3.client("s3")
    v1 = register(group, f"s3://{bucket}/models/job-1/output/model.tar.gz", approved=True)
    time.sleep(1.1)  # S3's LastModified is to the second: job-2 is the newest artifact
    newer = doubtful_baseline_model(model_dir, tmp_path / "newer")
    s3.put_object(Bucket=bucket, Key="models/job-2/output/model.tar.gz", Body=model_archive(newer))
    register(group, f"s3://{bucket}/models/job-2/output/model.tar.gz", approved=False)
    images = vehicles.test_images[:100]
    put_variant(bucket, "ep1", f"v{v1}", 0, capture_lines(images, predict(images)))
    code = main(
        [
            "monitor",
            "check",
            "--captures",
            f"s3://{bucket}/data_capture/ep1/",
            "--model-group",
            group,
            "--window",
            "100",
        ]
    )
    out = capsys.readouterr().out
    assert "baseline: s3://" + bucket + "/models/job-1/output/model.tar.gz" in out
    assert code == 0 and "verdict: no drift" in out


def test_after_a_rollout_check_and_report_read_the_new_variant_and_keep_the_shadow_apart(
    bucket: str,
    group: str,
    unique_name: str,
    tmp_path: Path,
    vehicles: Vehicles,
    predict,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """v9 served, then v10 was rolled out (v9 gone), and v11 is v10's shadow. Keys sort
    lexicographically (ListObjectsV2 lists in UTF-8 binary key order), so v10's records
    came before v9's and the "latest window" was v9's old traffic, with v11's copies mixed
    in. DescribeEndpoint's ShadowProductionVariants names the shadow (SageMaker API
    reference: the models hosted in shadow mode, with production traffic replicated to
    them): its verdict is shown, and sets no exit status."""
    model_data = f"s3://{bucket}/models/job-1/output/model.tar.gz"
    for _ in range(11):  # versions 1..11 of the same model
        register(group, model_data, approved=True)
    endpoint = unique_name
    images = vehicles.test_images[:100]
    answers = predict(images)
    motorcycle = np.tile([0.02, 0.98], (100, 1))  # answers that moved
    put_variant(bucket, endpoint, "v9", 0, capture_lines(images, motorcycle))
    put_variant(bucket, endpoint, "v10", 30, capture_lines(images, answers))
    put_variant(bucket, endpoint, "v11", 30, capture_lines(images, motorcycle))
    serve(endpoint, "v10", shadow="v11")
    captures = f"s3://{bucket}/data_capture/{endpoint}/"
    common = ["--captures", captures, "--model-group", group, "--window", "100"]

    assert main(["monitor", "check", *common]) == 0
    out = capsys.readouterr().out
    assert "variant v9 is not on the endpoint now: not judged" in out
    v10, v11 = out.split("variant: v10 (production)")[1].split("variant: v11 (shadow)")
    assert "verdict: no drift" in v10
    assert "verdict: model answers moved" in v11
    assert "v11 is a shadow: its verdict sets no exit status" in v11

    assert main(["monitor", "check", *common, "--variant", "v9"]) == 1  # asked for by name

    report = tmp_path / "report"
    code = main(["monitor", "report", *common, "--permutations", "200", "--out", str(report)])
    assert code == 0
    summaries = {
        variant: json.loads((report / variant / "summary.json").read_text())
        for variant in ("v10", "v11")
    }
    assert not (report / "v9").exists()
    assert summaries["v10"]["records"] == summaries["v11"]["records"] == 100
    assert summaries["v10"]["answer_drift_windows"] == 0
    assert summaries["v11"]["role"] == "shadow" and summaries["v11"]["answer_drift_windows"] == 1


@pytest.mark.parametrize(
    ("key", "variant"),
    [
        ("data_capture/ep/v10/2026/11/24/09/01-00-000-x.jsonl", "v10"),
        ("/captures/AllTraffic/2026/11/24/09/01-00-000-x.jsonl.gz", "AllTraffic"),
        ("data_capture/ep/../2026/11/24/09/x.jsonl", None),  # no VariantName: no folder
        ("data_capture/ep/-v1/2026/11/24/09/x.jsonl", None),
        ("data_capture/garbage/00-00-000-a.jsonl", None),  # not SageMaker's layout
    ],
)
def test_the_variant_is_read_from_sagemakers_capture_layout(key: str, variant: str | None) -> None:
    """Data capture writes under <variant>/YYYY/MM/DD/HH/; a VariantName matches
    [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62} (SageMaker API reference, ProductionVariant), so a
    name read from a key is also a safe folder name for the model and the report."""
    assert variant_of(key) == variant
