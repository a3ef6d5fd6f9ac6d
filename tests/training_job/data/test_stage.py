"""`python -m training_job stage`, end to end against the local AWS and the shared data."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from contract.manifest import LstEntry, format_lst, parse_lst, read_lst
from tests.conftest import REPO_ROOT
from tests.training_job.data.bucket_helpers import assert_settings
from tests.training_job.staging_helpers import (
    member,
    python2_pickle,
    serve_files,
    split_pickle,
    standard_members,
    write_archive,
)
from training_job.__main__ import main
from training_job.data import cifar, stage
from training_job.data.manifests import Manifest

ARCHIVE_NAME = "cifar-100-python-vehicles.tar.gz"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_stage(capsys: pytest.CaptureFixture[str], *arguments: str) -> Result:
    """The command through `python -m training_job`'s entry point, which prints its errors
    (in the local AWS's region when there is one: a usage error needs none)."""
    region = ["--region", os.environ.get("AWS_REGION") or "us-east-1"]
    capsys.readouterr()
    try:
        code = main(["stage", *arguments, *region])
    except SystemExit as exit:
        code = int(exit.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_one_line_error(result: Result, code: int, text: str) -> None:
    assert result.code == code
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("python -m training_job stage: error: ")
    assert text in result.err
    assert "Traceback" not in result.err


def objects(bucket: str) -> dict[str, dict[str, Any]]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"]: item for page in pages for item in page.get("Contents", [])}


def bucket_exists(bucket: str) -> bool:
    try:
        boto3.client("s3").head_bucket(Bucket=bucket)
    except ClientError as error:
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        return False
    return True


def read_object(bucket: str, key: str) -> bytes:
    return bytes(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


@dataclass
class Staged:
    bucket: str
    cache_dir: Path
    source: str
    first: Result


@pytest.fixture(scope="module")
def staged(
    local_aws: dict[str, str], shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Staged:
    """The shared archive staged once (by path) into a fresh bucket, for several tests."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    cache_dir = tmp_path_factory.mktemp("cache")
    source = str(shared_data / ARCHIVE_NAME)
    parser = argparse.ArgumentParser()
    stage.register(parser.add_subparsers())
    args = parser.parse_args(
        ["stage", "--source", source, "--bucket", bucket, "--cache-dir", str(cache_dir)]
    )
    code = args.func(args)
    return Staged(bucket, cache_dir, source, Result(code, "", ""))


def test_staging_writes_the_reference_layout(staged: Staged, shared_data: Path) -> None:
    assert staged.first.code == 0
    keys = set(objects(staged.bucket))
    expected = {"train.lst", "test.lst", "manifest.json"}
    for split in ("train", "test"):
        expected |= {f"{split}/{e.filename}" for e in read_lst(shared_data / f"{split}.lst")}
    assert keys == expected
    assert len(keys) == 1203


def test_lst_files_match_the_reference_labels_filenames_and_order(
    staged: Staged, shared_data: Path
) -> None:
    for split in ("train", "test"):
        ours = parse_lst(read_object(staged.bucket, f"{split}.lst").decode())
        reference = read_lst(shared_data / f"{split}.lst")
        assert [(e.label, e.filename) for e in ours] == [(e.label, e.filename) for e in reference]
        # Every image of the shared archive is a bicycle or a motorcycle, so its rows
        # are 0..N-1 here; the reference's rows are the official archive's.
        assert [e.row for e in ours] == list(range(len(reference)))


def archive_rows(path: Path, split: str) -> np.ndarray:
    """The split's pixel rows, read independently of the staging code (plain pickle)."""
    import pickle
    import tarfile

    with tarfile.open(path) as tar:
        member = tar.extractfile(f"cifar-100-python/{split}")
        assert member is not None
        data: np.ndarray = pickle.load(member, encoding="bytes")[b"data"]
    return data


def test_pngs_hold_the_archive_pixels_exactly(staged: Staged, shared_data: Path) -> None:
    local = next((staged.cache_dir / "staged" / staged.bucket).iterdir())
    listing = objects(staged.bucket)
    for split in ("train", "test"):
        rows = archive_rows(shared_data / ARCHIVE_NAME, split)
        for entry in read_lst(local / f"{split}.lst"):
            png = (local / split / entry.filename).read_bytes()
            pixels = np.asarray(Image.open(io.BytesIO(png)))
            expected = rows[entry.row].reshape(3, 32, 32).transpose(1, 2, 0)
            assert pixels.dtype == np.uint8
            assert np.array_equal(pixels, expected), entry
            # The bucket holds these same bytes (single-part ETag = MD5).
            etag = listing[f"{split}/{entry.filename}"]["ETag"].strip('"')
            assert etag == hashlib.md5(png).hexdigest()
    # And one object read back from the bucket, decoded, for good measure.
    first = read_lst(shared_data / "test.lst")[0]
    png = read_object(staged.bucket, f"test/{first.filename}")
    expected = archive_rows(shared_data / ARCHIVE_NAME, "test")[0].reshape(3, 32, 32)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), expected.transpose(1, 2, 0))


def test_manifest_describes_the_staging(staged: Staged) -> None:
    manifest = Manifest.from_json(read_object(staged.bucket, "manifest.json"))
    assert manifest.classes == ("bicycle", "motorcycle")
    assert manifest.counts == {
        "train": {"bicycle": 500, "motorcycle": 500},
        "test": {"bicycle": 100, "motorcycle": 100},
    }
    assert manifest.source == staged.source
    assert manifest.archive_sha256 == (
        "997ef44dfc34db3ecd45ed796aba3764bce4327e1d1a7cbbe902f80690ce6e8d"
    )
    assert manifest.objects == 1202
    listing = objects(staged.bucket)
    assert listing["manifest.json"]["LastModified"] >= max(
        item["LastModified"] for item in listing.values()
    )


def test_bucket_is_private_encrypted_tls_only_with_eventbridge(staged: Staged) -> None:
    s3 = boto3.client("s3")
    assert_settings(s3, staged.bucket)
    head = s3.head_object(Bucket=staged.bucket, Key="train.lst")
    assert head["ServerSideEncryption"] == "AES256"


def test_second_run_does_no_work(staged: Staged, capsys: pytest.CaptureFixture[str]) -> None:
    before = {key: item["LastModified"] for key, item in objects(staged.bucket).items()}
    result = run_stage(
        capsys,
        *("--source", staged.source, "--bucket", staged.bucket),
        *("--cache-dir", str(staged.cache_dir)),
    )
    assert result.code == 0
    assert result.out.startswith(f"already staged: s3://{staged.bucket}/")
    after = {key: item["LastModified"] for key, item in objects(staged.bucket).items()}
    assert after == before
    report = stage.stage(staged.source, "bicycle,motorcycle", staged.bucket, "", staged.cache_dir)
    assert report.already_staged
    assert (report.uploaded, report.deleted, report.built_locally) == (0, 0, False)


def test_a_partly_staged_bucket_is_completed_not_mistaken(staged: Staged) -> None:
    # What an interrupted run leaves: no manifest, some images missing.
    s3 = boto3.client("s3")
    missing = sorted(key for key in objects(staged.bucket) if key.startswith("train/"))[:3]
    for key in [*missing, "manifest.json"]:
        s3.delete_object(Bucket=staged.bucket, Key=key)
    report = stage.stage(staged.source, "bicycle,motorcycle", staged.bucket, "", staged.cache_dir)
    assert not report.already_staged
    assert (report.uploaded, report.deleted) == (3, 0)
    assert set(missing) | {"manifest.json"} <= set(objects(staged.bucket))


def test_a_damaged_local_copy_is_rebuilt(staged: Staged) -> None:
    local = next((staged.cache_dir / "staged" / staged.bucket).iterdir())
    victim = next((local / "train").iterdir())
    victim.write_bytes(b"not the png")
    report = stage.stage(staged.source, "bicycle,motorcycle", staged.bucket, "", staged.cache_dir)
    assert report.built_locally
    assert report.uploaded == 0  # the bucket still held the right bytes
    assert victim.read_bytes().startswith(b"\x89PNG")
    leftovers = [p.name for p in local.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_staging_from_a_url_with_a_prefix_then_fewer_classes(
    local_aws: dict[str, str],
    shared_data: Path,
    tmp_path: Path,
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive = (shared_data / ARCHIVE_NAME).read_bytes()
    with serve_files({"/cifar-100-python.tar.gz": archive}) as server:
        url = f"{server.url}/cifar-100-python.tar.gz"
        monkeypatch.setenv(stage.SOURCE_ENV, url)  # the default source, as in CI
        cache = str(tmp_path / "cache")
        result = run_stage(
            capsys, "--bucket", unique_name, "--prefix", "cifar", "--cache-dir", cache
        )
        assert result.code == 0, result.err
        assert len(server.requests) == 1
        keys = set(objects(unique_name))
        assert {"cifar/manifest.json", "cifar/train.lst", "cifar/test/bike_s_000658.png"} <= keys
        assert all(key.startswith("cifar/") for key in keys)
        assert Manifest.from_json(read_object(unique_name, "cifar/manifest.json")).source == url

        before = parse_lst(read_object(unique_name, "cifar/train.lst").decode())

        # One class is refused before anything is touched: train could not use it.
        refused = run_stage(
            capsys,
            *("--bucket", unique_name, "--prefix", "cifar/", "--classes", "motorcycle"),
            *("--cache-dir", cache),
        )
        assert_one_line_error(refused, 2, "name two or more classes")
        assert read_object(unique_name, "cifar/train.lst") == format_lst(before).encode()

        # Restaged with the classes in the other order: motorcycle becomes label 0.
        result = run_stage(
            capsys,
            *("--bucket", unique_name, "--prefix", "cifar/", "--classes", "motorcycle,bicycle"),
            *("--cache-dir", cache),
        )
        assert result.code == 0, result.err
        assert len(server.requests) == 1  # served from the cache
    train = parse_lst(read_object(unique_name, "cifar/train.lst").decode())
    assert [(e.row, 1 - e.label, e.filename) for e in train] == [
        (e.row, e.label, e.filename) for e in before
    ]
    pngs = [key for key in objects(unique_name) if key.endswith(".png")]
    assert len(pngs) == 1200
    assert "2 objects uploaded, 0 stale deleted" in result.out


def test_wrong_checksum_for_the_official_source_stages_nothing(
    local_aws: dict[str, str],
    shared_data: Path,
    tmp_path: Path,
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive = (shared_data / ARCHIVE_NAME).read_bytes()
    with serve_files({"/cifar-100-python.tar.gz": archive}) as server:
        url = f"{server.url}/cifar-100-python.tar.gz"
        monkeypatch.setitem(cifar.KNOWN_MD5, url, "eb9058c3a382ffc7106e4002c42a8d85")
        result = run_stage(
            capsys, "--source", url, "--bucket", unique_name, "--cache-dir", str(tmp_path)
        )
    assert_one_line_error(result, 1, "checksum mismatch")
    assert list((tmp_path / "downloads").iterdir()) == []
    assert not (tmp_path / "staged").exists()
    assert not bucket_exists(unique_name)


@pytest.mark.parametrize(
    ("archive", "expected"),
    [
        ("empty", "empty file"),
        ("text", "not a readable"),
        ("os_system", "refused to load os.system"),
        ("wrong_dtype", "dtype float32, expected uint8"),
        ("traversal", "path traversal"),
    ],
)
def test_bad_archives_fail_with_one_line_and_stage_nothing(
    local_aws: dict[str, str],
    tmp_path: Path,
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
    archive: str,
    expected: str,
) -> None:
    path = tmp_path / "archive.tar.gz"
    if archive == "empty":
        path.write_bytes(b"")
    elif archive == "text":
        path.write_text("hello\n")
    elif archive == "os_system":
        hostile = b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR."
        write_archive(path, standard_members(train=hostile))
    elif archive == "wrong_dtype":
        train = split_pickle(3, data=np.zeros((3, 3072), dtype=np.float32))
        write_archive(path, standard_members(train=python2_pickle(train)))
    else:
        write_archive(path, [member("cifar-100-python/../../x", b"x"), *standard_members()])
    cache = tmp_path / "cache"
    result = run_stage(
        capsys, "--source", str(path), "--bucket", unique_name, "--cache-dir", str(cache)
    )
    assert_one_line_error(result, 1, expected)
    assert not bucket_exists(unique_name)  # validated before anything was created
    assert not (cache / "staged").exists() or not any((cache / "staged").rglob("manifest.json"))
    assert not (tmp_path / "pwned").exists()


def test_a_small_built_archive_stages_only_the_chosen_classes(
    local_aws: dict[str, str], tmp_path: Path, unique_name: str
) -> None:
    train = split_pickle(9, seed=5)  # bicycle, motorcycle, apple, bicycle, ...
    path = write_archive(tmp_path / "a.tar.gz", standard_members(train=train))
    report = stage.stage(str(path), "motorcycle,apple", unique_name, "", tmp_path / "cache")
    lst = parse_lst(read_object(unique_name, "train.lst").decode())
    assert lst == [
        LstEntry(row, label, f"img_5_{row:04d}.png")
        for row, label in [(1, 0), (2, 1), (4, 0), (5, 1), (7, 0), (8, 1)]
    ]
    assert report.manifest.counts["train"] == {"motorcycle": 3, "apple": 3}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--classes", "bicyle"], "unknown class 'bicyle'; did you mean: bicycle?"),
        (["--classes", "motorcyle,bicycle"], "did you mean: motorcycle?"),
        (["--classes", "zzzz"], "unknown class 'zzzz'; no close match"),
        (["--classes", "bicycle,,motorcycle"], "expected comma-separated class names"),
        (["--classes", ""], "expected comma-separated class names"),
        (["--classes", "bicycle,bicycle"], "lists bicycle more than once"),
        (["--classes", "bicycle"], "--classes 'bicycle': name two or more classes"),
        (["--bucket", "b" * 100_000], "invalid bucket name 'bbbb"),
        (["--bucket", "Not_A_Bucket"], "invalid bucket name 'Not_A_Bucket'"),
        (["--prefix", "../up"], "--prefix '../up/'"),
        (["--prefix", "/abs"], "--prefix '/abs/'"),
        (["--source", "ftp://example.invalid/a.tar.gz"], "only http(s) URLs or local paths"),
        (["--source", "/no/such/archive.tar.gz"], "no such file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], expected: str
) -> None:
    # No AWS is needed: usage is checked before anything is touched.
    base = {"--bucket": "some-bucket", "--source": str(tmp_path / "x.tar.gz")}
    (tmp_path / "x.tar.gz").write_bytes(b"")
    for flag, value in zip(arguments[::2], arguments[1::2], strict=True):
        base[flag] = value
    flat = [part for pair in base.items() for part in pair]
    result = run_stage(capsys, *flat, "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(result, 2, expected)
    assert not (tmp_path / "cache").exists()
    assert len(result.err) < 1000  # an argument of any length is shown bounded


def test_a_capture_retention_under_a_day_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_stage(
        capsys, "--bucket", "some-bucket", "--capture-retention-days", "0", "--cache-dir",
        str(tmp_path / "cache"),
    )  # fmt: skip
    assert result.code == 2
    assert "--capture-retention-days: '0' is not a positive integer" in result.err
    assert not (tmp_path / "cache").exists()


def test_missing_bucket_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_stage(capsys)
    assert result.code == 2
    assert "--bucket" in result.err


def test_help_explains_every_option() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "training_job", "stage", "--help"],
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if k != stage.SOURCE_ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout
    for option in (
        "--source",
        "--classes",
        "--bucket",
        "--prefix",
        "--cache-dir",
        "--capture-retention-days",
    ):
        assert option in text
    for fact in ("SCONES_CIFAR_SOURCE", cifar.OFFICIAL_URL, "bicycle,motorcycle", ".cache/cifar"):
        assert fact in text
    assert "manifest.json" in text
    assert "data_capture/" in text


def test_stage_is_listed_with_a_summary() -> None:
    parser = argparse.ArgumentParser(prog="python -m training_job")
    stage.register(parser.add_subparsers(dest="command"))
    assert "stage CIFAR-100 classes into the bucket" in parser.format_help()
