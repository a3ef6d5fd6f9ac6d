"""`python -m training_job train --include-reviewed`: the reviewed photos in the bucket
(contract.decisions' manifest and images) are checked, pinned beside the job and trained
on, in both modes; a manifest that cannot be trained on is refused before any job starts
and leaves nothing under models/."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import boto3
import pytest
from PIL import Image

from contract.decisions import (
    ANSWER_NEITHER,
    REVIEWED_IMAGES_PREFIX,
    REVIEWED_MANIFEST_KEY,
    REVIEWED_MANIFEST_VARIABLE,
    REVIEWED_SHA256_VARIABLE,
    image_id,
)
from contract.manifest import LstEntry, format_lst
from tests.staged_sample import keys_under, read_object, sample_images, stage_sample
from tests.training_job.training.launch_helpers import (
    IMAGE_DIGEST,
    IMAGE_REPOSITORY,
    ROLE,
    channel_uris,
    describe,
    launch,
)
from training_job.data import reviewed_photos
from training_job.review.reviewed import ReviewedManifest as ReviewedAnswers
from training_job.training import launch as train
from training_job.training import sagemaker_job

# SageMaker mode trains in the project's image: every job here finds one recorded.
pytestmark = pytest.mark.usefixtures("recorded_image")
STAGED_PER_CLASS = 4
CLASSES = ("bicycle", "motorcycle")


def new_uploads(shared_data: Path, count: int) -> list[tuple[int, bytes, str]]:
    """(label, bytes, name) of train images the staged sample does not hold, named as new
    uploads are; the first as a large JPEG, as a phone would send it."""
    staged = {row for row, _, _ in sample_images(shared_data, "train", STAGED_PER_CLASS)}
    photos = []
    for row, label, png in sample_images(shared_data, "train", STAGED_PER_CLASS + count):
        if row in staged:
            continue
        if not photos:
            buffer = io.BytesIO()
            image = Image.open(io.BytesIO(png)).resize((640, 480), Image.Resampling.BICUBIC)
            image.save(buffer, format="JPEG")
            photos.append((label, buffer.getvalue(), f"upload-{row}.jpg"))
        else:
            photos.append((label, png, f"upload-{row}.png"))
    return photos


def put_reviewed(bucket: str, photos: list[tuple[int, bytes, str]], lst: str | None = None) -> str:
    """What the review command leaves in the bucket; returns the manifest's text."""
    s3 = boto3.client("s3")
    for _, data, name in photos:
        s3.put_object(Bucket=bucket, Key=f"{REVIEWED_IMAGES_PREFIX}{name}", Body=data)
    if lst is None:
        lst = format_lst(LstEntry(n, label, name) for n, (label, _, name) in enumerate(photos))
    s3.put_object(Bucket=bucket, Key=REVIEWED_MANIFEST_KEY, Body=lst.encode())
    return lst


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[tuple[int, bytes, str]]:
    return new_uploads(shared_data, 3)


@pytest.fixture
def bucket(local_aws: dict[str, str], shared_data: Path, unique_name: str) -> str:
    """A freshly staged bucket per test: the reviewed keys are fixed, one set a bucket."""
    stage_sample(unique_name, shared_data, train=STAGED_PER_CLASS, test=2)
    return unique_name


@pytest.mark.slow
def test_local_mode_trains_on_the_reviewed_photos_and_records_them(
    bucket: str,
    photos: list[tuple[int, bytes, str]],
    one_cpu: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    lst = put_reviewed(bucket, photos)
    job = "with-reviewed"
    argv = ["--mode", "local", "--bucket", bucket, "--job-name", job, "--include-reviewed"]
    assert launch(*argv, "--epochs", "1", "-H", "val_fraction=0.25") == 0
    out = capfd.readouterr().out
    metrics = json.loads(read_object(bucket, f"models/{job}/output/metrics.json"))
    sha256 = hashlib.sha256(lst.encode()).hexdigest()
    assert metrics["reviewed"] == {
        "added": 6,
        "per_class": {"bicycle": 3, "motorcycle": 3},
        "manifest": f"s3://{bucket}/{REVIEWED_MANIFEST_KEY}",
        "sha256": sha256,
    }
    # 8 staged train images: 2 validate, 6 train, and the 6 reviewed join the 6.
    assert metrics["counts"] == {"train": 12, "val": 2, "test": 4}
    # The manifest the job read stays beside its output, byte for byte.
    assert read_object(bucket, f"models/{job}/input/reviewed.lst") == lst.encode()
    assert f"adding 6 reviewed photos from s3://{bucket}/{REVIEWED_MANIFEST_KEY}" in out
    assert f"reviewed photos added  6 from s3://{bucket}/{REVIEWED_MANIFEST_KEY}" in out


def test_sagemaker_job_gets_the_reviewed_channels_and_the_manifest_it_was_checked_with(
    bucket: str, photos: list[tuple[int, bytes, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    lst = put_reviewed(bucket, photos)
    job = "sagemaker-with-reviewed"
    code = launch(
        "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE, "--job-name", job,
        "--include-reviewed", "--no-wait",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    described = describe(job)
    channels = channel_uris(described)
    assert channels["reviewed"] == (f"s3://{bucket}/{REVIEWED_IMAGES_PREFIX}", None)
    assert channels["reviewed_lst"] == (f"s3://{bucket}/models/{job}/input/reviewed.lst", None)
    assert channels["test"] == (f"s3://{bucket}/test/", None)
    # moto keeps no Environment: the SDK's estimator, which writes it into
    # CreateTrainingJob, is read (as test_train_launcher.py reads its Debugger settings).
    parser = argparse.ArgumentParser(prog="python -m training_job")
    train.register(parser.add_subparsers(dest="command", required=True))
    plan = train.make_plan(
        parser.parse_args(
            ["train", "--mode", "sagemaker", "--bucket", bucket, "--role", ROLE,
             "--job-name", "another", "--include-reviewed"]
        )
    )  # fmt: skip
    estimator, _ = sagemaker_job.build_estimator(
        plan, ROLE, "ml.m5.xlarge", training_image=f"{IMAGE_REPOSITORY}@{IMAGE_DIGEST}"
    )
    assert estimator.environment[REVIEWED_MANIFEST_VARIABLE] == (
        f"s3://{bucket}/{REVIEWED_MANIFEST_KEY}"
    )
    assert estimator.environment[REVIEWED_SHA256_VARIABLE] == (
        hashlib.sha256(lst.encode()).hexdigest()
    )
    # The image records the commit its code came from (Dockerfile, `image build`).
    assert "SCONES_GIT_COMMIT" not in estimator.environment
    # A later answer rewrites the manifest; the job's pinned copy does not change.
    put_reviewed(bucket, photos[:1])
    assert read_object(bucket, f"models/{job}/input/reviewed.lst") == lst.encode()


def test_a_job_name_already_used_is_refused_and_its_pinned_manifest_kept(
    bucket: str, photos: list[tuple[int, bytes, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    lst = put_reviewed(bucket, photos)
    argv = ["--mode", "sagemaker", "--bucket", bucket, "--role", ROLE, "--include-reviewed"]
    assert launch(*argv, "--job-name", "first", "--no-wait") == 0
    put_reviewed(bucket, photos[:2])
    capsys.readouterr()
    assert launch(*argv, "--job-name", "first", "--no-wait") == 1
    err = capsys.readouterr().err
    assert f"s3://{bucket}/models/first/input/reviewed.lst exists" in err
    assert read_object(bucket, "models/first/input/reviewed.lst") == lst.encode()


def refusal(bucket: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """The command's one-line error; it wrote nothing."""
    before = keys_under(bucket, "models/")
    code = launch("--mode", "local", "--bucket", bucket, "--include-reviewed", *extra)
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("python -m training_job train: error: ") and err.count("\n") == 1
    assert keys_under(bucket, "models/") == before
    return err


def test_no_reviewed_manifest_is_refused(bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal(bucket, capsys)
    assert f"s3://{bucket}/{REVIEWED_MANIFEST_KEY} not found" in err
    assert "python -m training_job review" in err


@pytest.mark.parametrize(
    ("lst", "message"),
    [
        ("", "lists no photos: nothing to add"),
        ("0\t1\tupload.png\n\n", "line 2: blank line"),
        ("0\t1\n", "line 1: expected 3 tab-separated fields"),
        ("0\tbicycle\tupload.png\n", "row and label must be non-negative integers"),
        ("0\t2\tupload.png\n", "line 1: label 2 names no class of bicycle,motorcycle"),
        ("0\t0\t../train/x.png\n", "unsafe or empty filename"),
        ("0\t0\tupload.png\n1\t1\tupload.png\n", "duplicate filename 'upload.png'"),
        ("0\t1\tgone.png\n", "names 1 photo(s) not under s3://"),
    ],
)
def test_a_malformed_or_empty_manifest_is_refused_with_its_reason(
    bucket: str,
    photos: list[tuple[int, bytes, str]],
    lst: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    put_reviewed(bucket, [(1, photos[1][1], "upload.png")], lst)
    assert message in refusal(bucket, capsys)


def test_a_manifest_that_is_not_text_is_refused(
    bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=REVIEWED_MANIFEST_KEY, Body=b"\xff\xfe0\t1")
    assert "not UTF-8 text" in refusal(bucket, capsys)


def test_an_oversized_manifest_is_refused_before_it_is_read(
    bucket: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reviewed_photos, "MAX_LST_BYTES", 1000)
    put_reviewed(bucket, [], "0\t1\tupload.png\n" * 100)
    assert "is 1500 bytes, over 1000" in refusal(bucket, capsys)


def test_a_photo_over_the_endpoints_size_limit_is_refused(
    bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    put_reviewed(bucket, [(0, b"\x89PNG" + b"\0" * (5 * 2**20), "huge.png")])
    assert "names 1 photo(s) over 5242880 bytes" in refusal(bucket, capsys)


def test_a_photo_named_like_a_staged_image_is_refused(
    bucket: str, photos: list[tuple[int, bytes, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    test_name = keys_under(bucket, "test/")[0].removeprefix("test/")
    put_reviewed(bucket, [*photos, (0, photos[1][1], test_name)])
    err = refusal(bucket, capsys)
    assert f"names 1 photo(s) with the name of a staged test image: '{test_name}'" in err
    test_names = {key.removeprefix("test/") for key in keys_under(bucket, "test/")}
    train_names = {key.removeprefix("train/") for key in keys_under(bucket, "train/")}
    train_name = sorted(train_names - test_names)[0]
    put_reviewed(bucket, [(0, photos[1][1], train_name)])
    assert "with the name of a staged train image" in refusal(bucket, capsys)


def test_a_copy_of_a_test_image_under_a_new_name_is_refused(
    bucket: str, photos: list[tuple[int, bytes, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    test_key = keys_under(bucket, "test/")[1]
    put_reviewed(bucket, [*photos, (1, read_object(bucket, test_key), "my-bike.png")])
    err = refusal(bucket, capsys)
    assert "names 1 photo(s) whose bytes are a test image's: 'my-bike.png'" in err


def test_the_builtin_algorithm_cannot_include_reviewed_photos(
    bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = launch(
        "--mode", "sagemaker", "--algorithm", "builtin", "--role", ROLE, "--bucket", bucket,
        "--include-reviewed",
    )  # fmt: skip
    assert code == 2
    assert "--include-reviewed applies to --algorithm pytorch only" in capsys.readouterr().err


def test_help_explains_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        launch("--help")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--include-reviewed also train on the photos people labelled" in text
    assert "never validation or test" in text


def test_what_the_review_command_writes_is_accepted_and_a_reviewed_test_photo_refused(
    bucket: str, photos: list[tuple[int, bytes, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The contract between the two commands: answers recorded by the review command's own
    writer (training_job/review/reviewed.py) are what --include-reviewed reads; a staged
    test photo run through the workflow and answered is refused by its bytes."""
    s3 = boto3.client("s3")
    writer = ReviewedAnswers(s3, bucket)
    for label, data, name in photos:
        key = f"incoming/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        writer.record(image_id(bucket, key), key, CLASSES[label])
    s3.put_object(Bucket=bucket, Key="incoming/odd.png", Body=photos[0][1])
    writer.record(image_id(bucket, "incoming/odd.png"), "incoming/odd.png", ANSWER_NEITHER)
    argv = ["--mode", "sagemaker", "--bucket", bucket, "--role", ROLE, "--include-reviewed"]
    assert launch(*argv, "--job-name", "from-the-review-command", "--no-wait") == 0
    assert "adding 6 reviewed photos" in capsys.readouterr().out  # "neither" is not one

    test_key = keys_under(bucket, "test/")[0]
    writer.record(image_id(bucket, test_key), test_key, "bicycle")
    err = refusal(bucket, capsys)
    assert "names 1 photo(s) whose bytes are a test image's" in err
