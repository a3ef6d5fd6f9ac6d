"""The baseline profile: where it lives in S3, loading it, and rebuilding it.

Training writes `baseline.json` and `baseline_embeddings.npy` into the model directory
(so inside `model.tar.gz`, see training_job/code/baseline_profile.py). `monitor baseline` also puts
them beside the artifact (`models/<job>/output/baseline.json`), where the scheduled
Lambda reads them without unpacking the model; for a model trained without a profile it
rebuilds one first.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from tqdm import tqdm

from contract import baseline as baseline_format
from contract.baseline import BASELINE_FILE, EMBEDDINGS_FILE
from training_job import model_code
from training_job.models import archive as model_archive

MODEL_ARTIFACT = "model.tar.gz"
MODELS_PREFIX = "models/"
# A model artifact is tens of MB; refuse to unpack anything far beyond that.
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024
MAX_REBUILD_IMAGES = 5000


class BaselineError(ValueError):
    """No usable baseline: missing, malformed, or for another model shape."""


@dataclass
class Baseline:
    """What the detectors compare against: the model's answers and embeddings from the
    validation images; the input statistics and upload sizes from the whole training
    split (format 3), or from the validation images too (formats 1 and 2)."""

    classes: list[str]
    threshold: float
    statistics: dict[str, np.ndarray]
    upload_bytes: np.ndarray | None
    content_types: dict[str, int] | None
    probabilities: np.ndarray
    embeddings: np.ndarray
    source: str

    @property
    def confidences(self) -> np.ndarray:
        return np.asarray(self.probabilities.max(axis=1), dtype=np.float64)

    @property
    def count(self) -> int:
        return len(self.probabilities)

    @classmethod
    def from_document(cls, document: Any, embeddings: np.ndarray, source: str) -> Baseline:
        try:
            # The one reading of baseline.json, the scheduled Lambda's too.
            parsed = baseline_format.parse(document, source)
        except baseline_format.BaselineFormatError as error:
            raise BaselineError(str(error)) from error
        if embeddings.ndim != 2 or len(embeddings) != parsed.count:
            raise BaselineError(
                f"{source}: embeddings must be ({parsed.count}, D), got {embeddings.shape}"
            )
        return cls(
            classes=parsed.classes,
            threshold=parsed.threshold,
            statistics={
                name: np.asarray(values, dtype=np.float64)
                for name, values in parsed.input_statistics.items()
            },
            upload_bytes=None
            if parsed.upload_bytes is None
            else np.asarray(parsed.upload_bytes, dtype=np.float64),
            content_types=parsed.content_types,
            probabilities=np.asarray(parsed.probabilities, dtype=np.float64),
            embeddings=np.asarray(embeddings, dtype=np.float64),
            source=source,
        )

    @classmethod
    def from_bytes(cls, document: bytes, embeddings: bytes, source: str) -> Baseline:
        try:
            array = np.load(io.BytesIO(embeddings), allow_pickle=False)
        except (ValueError, OSError) as error:
            raise BaselineError(f"{source}: unreadable embeddings ({error})") from error
        try:
            parsed = json.loads(document)
        except (ValueError, RecursionError) as error:
            raise BaselineError(f"{source}: not a baseline document: not JSON ({error})") from error
        return cls.from_document(parsed, array, source)

    @classmethod
    def from_dir(cls, model_dir: Path) -> Baseline:
        document, embeddings = model_dir / BASELINE_FILE, model_dir / EMBEDDINGS_FILE
        if not document.is_file() or not embeddings.is_file():
            raise BaselineError(f"{model_dir} holds no {BASELINE_FILE} and {EMBEDDINGS_FILE}")
        return cls.from_bytes(document.read_bytes(), embeddings.read_bytes(), str(model_dir))


def newest_model(bucket: str) -> str:
    """The key of the most recently written `models/<job>/output/model.tar.gz`."""
    s3 = boto3.client("s3")
    newest: tuple[Any, str] | None = None
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=MODELS_PREFIX):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/output/" + MODEL_ARTIFACT) and (
                newest is None or item["LastModified"] > newest[0]
            ):
                newest = (item["LastModified"], item["Key"])
    if newest is None:
        raise BaselineError(f"no models/<job>/output/{MODEL_ARTIFACT} in s3://{bucket}")
    return newest[1]


def _beside(model_key: str, name: str) -> str:
    return model_key.rsplit("/", 1)[0] + "/" + name if "/" in model_key else name


def fetch_model(bucket: str, model_key: str, into: Path) -> Path:
    """Download and unpack model.tar.gz into `into`; returns the model directory."""
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=bucket, Key=model_key)
    if head["ContentLength"] > MAX_ARTIFACT_BYTES:
        raise BaselineError(f"s3://{bucket}/{model_key} is over {MAX_ARTIFACT_BYTES} bytes")
    archive = into / MODEL_ARTIFACT
    s3.download_file(bucket, model_key, str(archive))
    try:
        # The extractor deploy uses: an archive deploy refuses is refused here too.
        model_dir = model_archive.extract_model(archive, into / "model")
    except model_archive.ModelArchiveError as error:
        raise BaselineError(f"s3://{bucket}/{model_key}: {error}") from error
    finally:
        archive.unlink()
    return model_dir


def load_baseline(bucket: str, model_key: str, model_dir: Path | None) -> Baseline:
    """The baseline beside the artifact in S3, else the one inside the unpacked model."""
    s3 = boto3.client("s3")
    document_key, embeddings_key = (
        _beside(model_key, BASELINE_FILE),
        _beside(model_key, EMBEDDINGS_FILE),
    )
    try:
        document = s3.get_object(Bucket=bucket, Key=document_key)["Body"].read()
        embeddings = s3.get_object(Bucket=bucket, Key=embeddings_key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        if model_dir is None:
            raise BaselineError(
                f"no baseline beside s3://{bucket}/{model_key}; run `python -m training_job "
                "monitor baseline` for it"
            ) from None
        try:
            return Baseline.from_dir(model_dir)
        except BaselineError as error:
            raise BaselineError(
                f"s3://{bucket}/{model_key} has no baseline ({error}); run `python -m "
                "training_job monitor baseline --model-data s3://...` to build one"
            ) from error
    return Baseline.from_bytes(document, embeddings, f"s3://{bucket}/{document_key}")


def read_images(bucket: str, prefix: str, limit: int) -> tuple[np.ndarray, list[int]]:
    """Decode up to `limit` staged images under s3://bucket/prefix, in key order."""
    imaging = model_code.imaging()
    s3 = boto3.client("s3")
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
        if item["Key"].lower().endswith((".png", ".jpg", ".jpeg"))
    ][:limit]
    if len(keys) < 2:
        raise BaselineError(f"s3://{bucket}/{prefix} holds {len(keys)} images; need at least 2")
    images, sizes = [], []
    for key in tqdm(keys, desc="baseline images", unit="img"):
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        images.append(imaging.decode(data))
        sizes.append(len(data))
    return np.stack(images), sizes


def publish(bucket: str, model_key: str, model_dir: Path) -> list[str]:
    """Upload the model dir's baseline files beside the artifact; embeddings first, so a
    reader that finds baseline.json always finds its embeddings too."""
    s3 = boto3.client("s3")
    written = []
    for name in (EMBEDDINGS_FILE, BASELINE_FILE):
        key = _beside(model_key, name)
        s3.upload_file(str(model_dir / name), bucket, key)
        written.append(f"s3://{bucket}/{key}")
    return written


@dataclass
class ProfileImages:
    """The images a baseline is built from: held-out ones for the model's answers and
    embeddings, and those whose input statistics and upload sizes are the reference."""

    images: np.ndarray
    sizes: list[int]
    input_images: np.ndarray
    input_sizes: list[int]


def training_split_images(
    bucket: str, data_prefix: str, hyperparameters: dict[str, Any], workdir: Path
) -> ProfileImages:
    """The training job's images, reproduced: the staged train split read by train.py's
    own reader and cut by its own seeded stratified split into its validation part (the
    answers' reference) and the whole split (the input statistics' reference, as
    train.py writes it)."""
    data = model_code.data()
    s3 = boto3.client("s3")
    channel = workdir / "train"
    channel.mkdir()
    lst = s3.get_object(Bucket=bucket, Key=f"{data_prefix}train.lst")["Body"].read()
    (channel / "train.lst").write_bytes(lst)
    for line in tqdm(lst.decode("utf-8").splitlines(), desc="train split", unit="img"):
        fields = line.split("\t")
        if len(fields) != 3 or "/" in fields[2] or fields[2].startswith("."):
            continue  # read_split names the bad line; only plain file names are fetched
        s3.download_file(bucket, f"{data_prefix}train/{fields[2]}", str(channel / fields[2]))
    classes = [str(c) for c in hyperparameters["classes"]]
    try:
        split = data.read_split(channel, channel, "train", classes)
        _, val_indices = data.stratified_split(
            split.labels, float(hyperparameters["val_fraction"]), int(hyperparameters["seed"])
        )
    except data.TrainingError as error:
        raise BaselineError(f"cannot reproduce the validation split: {error}") from error
    val = data.subset(split, val_indices)
    return ProfileImages(val.images, list(val.byte_sizes), split.images, list(split.byte_sizes))


def ensure_baseline(
    bucket: str, model_key: str, data_prefix: str, images_prefix: str | None, rebuild: bool
) -> tuple[list[str], str]:
    """Put a baseline beside the model: the packaged one, else one rebuilt as train.py
    writes it from the train split the model's metrics.json describes (or from
    `images_prefix`).
    Returns the written URLs and where the baseline came from."""
    with tempfile.TemporaryDirectory(prefix="baseline-") as name:
        workdir = Path(name)
        model_dir = fetch_model(bucket, model_key, workdir)
        packaged = (model_dir / BASELINE_FILE).is_file() and (model_dir / EMBEDDINGS_FILE).is_file()
        if packaged and not rebuild:
            Baseline.from_dir(model_dir)  # refuse to publish a malformed one
            return publish(bucket, model_key, model_dir), "packaged in the model"
        net, config = model_code.model().load_model(model_dir)
        metrics_path = model_dir / "metrics.json"
        hyperparameters = (
            json.loads(metrics_path.read_text()).get("hyperparameters", {})
            if metrics_path.is_file()
            else {}
        )
        if images_prefix is None and {"val_fraction", "seed", "classes"} <= set(hyperparameters):
            profile = training_split_images(bucket, data_prefix, hyperparameters, workdir)
            origin = "rebuilt from the reproduced training split (answers from its validation part)"
        else:
            # Images the model may not have seen, but nothing says which: all of them
            # are the reference of both halves.
            prefix = images_prefix if images_prefix is not None else f"{data_prefix}test/"
            images, sizes = read_images(bucket, prefix, MAX_REBUILD_IMAGES)
            profile = ProfileImages(images, sizes, images, sizes)
            origin = f"rebuilt from s3://{bucket}/{prefix}"
        out_dir = workdir / "baseline"
        model_code.profile().write_baseline(
            out_dir,
            net,
            config,
            profile.images,
            profile.sizes,
            profile.input_images,
            profile.input_sizes,
        )
        return publish(bucket, model_key, out_dir), origin
