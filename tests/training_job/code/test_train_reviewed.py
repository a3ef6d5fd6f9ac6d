"""train.py's optional `reviewed` channels (`train --include-reviewed`): the photos join the
training part only, metrics.json says how many and from which manifest, and a manifest
that would train on the test split, or is not the one the launcher checked, is refused."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from contract.decisions import REVIEWED_MANIFEST_VARIABLE, REVIEWED_SHA256_VARIABLE
from tests.training_job.code.conftest import CLASSES
from tests.training_job.code.train_helpers import TINY, run_train, sagemaker_env

MANIFEST_URI = "s3://scones-bucket/reviewed/reviewed.lst"


def new_uploads(archive: Path, skip: int, count: int) -> list[tuple[int, bytes, str]]:
    """(label, bytes, name) of `count` train images per class after the first `skip` (which
    staged_sample took): photos the model has not seen, one of them as a large JPEG, as a
    phone would upload it."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("cifar-100-python/train")
        assert member is not None
        document = pickle.load(member, encoding="bytes")
    seen = {0: 0, 1: 0}
    photos: list[tuple[int, bytes, str]] = []
    for row, (pixels, fine) in enumerate(
        zip(document[b"data"], document[b"fine_labels"], strict=True)
    ):
        label = CLASSES[fine]
        seen[label] += 1
        if not skip < seen[label] <= skip + count:
            continue
        image = Image.fromarray(
            np.asarray(pixels, dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)
        )
        buffer = io.BytesIO()
        if not photos:
            image.resize((640, 480), Image.Resampling.BICUBIC).save(buffer, format="JPEG")
            photos.append((label, buffer.getvalue(), f"upload-{row}.jpg"))
        else:
            image.save(buffer, format="PNG")
            photos.append((label, buffer.getvalue(), f"upload-{row}.png"))
    return photos


def reviewed_channels(
    root: Path, photos: list[tuple[int, bytes, str]], lst_text: str | None = None
) -> dict[str, Path]:
    images, lst = root / "reviewed", root / "reviewed_lst"
    images.mkdir(parents=True)
    lst.mkdir(parents=True)
    for _, data, name in photos:
        (images / name).write_bytes(data)
    if lst_text is None:
        lst_text = "".join(f"{n}\t{label}\t{name}\n" for n, (label, _, name) in enumerate(photos))
    (lst / "reviewed.lst").write_text(lst_text)
    return {"reviewed": images, "reviewed_lst": lst}


def job_env(staged: dict[str, Path], reviewed: dict[str, Path], root: Path) -> dict[str, str]:
    env = sagemaker_env({**staged, **reviewed}, root)
    manifest = (reviewed["reviewed_lst"] / "reviewed.lst").read_bytes()
    env[REVIEWED_MANIFEST_VARIABLE] = MANIFEST_URI
    env[REVIEWED_SHA256_VARIABLE] = hashlib.sha256(manifest).hexdigest()
    return env


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[tuple[int, bytes, str]]:
    return new_uploads(shared_data / "cifar-100-python-vehicles.tar.gz", skip=30, count=6)


def test_reviewed_photos_join_the_training_part_only_and_are_recorded(
    staged_sample: dict[str, Path], photos: Any, tmp_path: Path
) -> None:
    reviewed = reviewed_channels(tmp_path / "channels", photos)
    env = job_env(staged_sample, reviewed, tmp_path / "job")
    result = run_train(env, *TINY, "--seed", "3")
    metrics = json.loads((tmp_path / "job" / "model" / "metrics.json").read_text())
    # staged_sample alone trains on 48, validates on 12 (test_train.py): the 12 reviewed
    # photos are added to the 48, and validation and test are the same images as without.
    assert metrics["counts"] == {"train": 48 + 12, "val": 12, "test": 20}
    assert metrics["val_per_class"]["bicycle"]["support"] == 6
    sha256 = hashlib.sha256((reviewed["reviewed_lst"] / "reviewed.lst").read_bytes()).hexdigest()
    assert metrics["reviewed"] == {
        "added": 12,
        "per_class": {"bicycle": 6, "motorcycle": 6},
        "manifest": MANIFEST_URI,
        "sha256": sha256,
    }
    assert "training on 60 images (12 of them reviewed)" in result.stdout


def test_without_the_channels_nothing_is_added(trained_without: dict[str, Any]) -> None:
    assert trained_without["reviewed"] is None
    assert trained_without["counts"]["train"] == 48


@pytest.fixture(scope="module")
def trained_without(
    staged_sample: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("plain-job")
    run_train(sagemaker_env(staged_sample, root), *TINY, "--epochs", "1")
    metrics: dict[str, Any] = json.loads((root / "model" / "metrics.json").read_text())
    return metrics


def refused(env: dict[str, str], root: Path) -> str:
    result = run_train(env, *TINY, check=False)
    assert result.returncode == 2, result.stderr
    assert not (root / "model" / "metrics.json").exists()
    return result.stderr


def test_a_photo_with_the_pixels_of_a_test_image_is_refused(
    staged_sample: dict[str, Path], photos: Any, tmp_path: Path
) -> None:
    test_image = sorted(staged_sample["test"].iterdir())[3]
    # Re-encoded (another PNG compression level): different bytes, the same pixels.
    buffer = io.BytesIO()
    Image.open(test_image).save(buffer, format="PNG", compress_level=0)
    assert buffer.getvalue() != test_image.read_bytes()
    leak = (1, buffer.getvalue(), "innocent-upload.png")
    reviewed = reviewed_channels(tmp_path / "channels", [*photos[:2], leak])
    err = refused(job_env(staged_sample, reviewed, tmp_path / "job"), tmp_path / "job")
    assert "reviewed.lst lines 3: 1 reviewed photo(s) have the pixels of a test image" in err


def test_a_manifest_other_than_the_one_the_launcher_checked_is_refused(
    staged_sample: dict[str, Path], photos: Any, tmp_path: Path
) -> None:
    reviewed = reviewed_channels(tmp_path / "channels", photos)
    env = job_env(staged_sample, reviewed, tmp_path / "job")
    env[REVIEWED_SHA256_VARIABLE] = "0" * 64
    err = refused(env, tmp_path / "job")
    assert f"not the {'0' * 64} the launcher checked" in err


@pytest.mark.parametrize(
    ("lst_text", "message"),
    [
        ("", "reviewed.lst lists no images"),
        ("0\t2\tupload.png\n", "label 2 is outside the 2 classes"),  # "neither" is no class
        ("0\t1\n", "expected 3 tab-separated fields"),
        ("0\t1\tnot-there.png\n", "cannot read 'not-there.png'"),
        ("0\t1\t../test/x.png\n", "unsafe or empty filename"),
    ],
)
def test_a_bad_reviewed_manifest_is_refused_with_its_reason(
    staged_sample: dict[str, Path], tmp_path: Path, lst_text: str, message: str
) -> None:
    reviewed = reviewed_channels(tmp_path / "channels", [], lst_text)
    shutil.copy(sorted(staged_sample["train"].iterdir())[0], reviewed["reviewed"] / "upload.png")
    err = refused(job_env(staged_sample, reviewed, tmp_path / "job"), tmp_path / "job")
    assert message in err


def test_one_channel_of_the_pair_alone_is_refused(
    staged_sample: dict[str, Path], photos: Any, tmp_path: Path
) -> None:
    reviewed = reviewed_channels(tmp_path / "channels", photos)
    env = sagemaker_env({**staged_sample, "reviewed": reviewed["reviewed"]}, tmp_path / "job")
    assert "the reviewed_lst channel is missing" in refused(env, tmp_path / "job")
