"""Fixtures for the monitor tests: the shared vehicle images, a small trained model with
its baseline, and capture records built with the capture module, as the endpoint does."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training_job import model_code
from training_job.serving import capture

BICYCLE, MOTORCYCLE = 8, 48


@dataclass(frozen=True)
class Vehicles:
    train_images: np.ndarray  # uint8 (N, 32, 32, 3)
    train_labels: np.ndarray  # 0 bicycle, 1 motorcycle
    test_images: np.ndarray
    test_labels: np.ndarray


def _split(archive: tarfile.TarFile, name: str) -> tuple[np.ndarray, np.ndarray]:
    member = archive.extractfile(f"cifar-100-python/{name}")
    assert member is not None
    batch = pickle.load(member, encoding="bytes")
    images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.array([0 if label == BICYCLE else 1 for label in batch[b"fine_labels"]])
    return np.ascontiguousarray(images), labels


@pytest.fixture(scope="session")
def vehicles(shared_data: Path) -> Vehicles:
    with tarfile.open(shared_data / "cifar-100-python-vehicles.tar.gz") as archive:
        train = _split(archive, "train")
        test = _split(archive, "test")
    return Vehicles(*train, *test)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, vehicles: Vehicles) -> Path:
    """A small network trained for a few steps on 800 train images, with the baseline
    profile.write_baseline writes as train.py does: the answers from the 200 held-out
    ones, the input statistics from all 1,000."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = model_code.model()
    images, labels = vehicles.train_images[:800], vehicles.train_labels[:800]
    mean = (images.reshape(-1, 3).mean(0) / 255).tolist()
    std = (images.reshape(-1, 3).std(0) / 255).tolist()
    config = model.ModelConfig(["bicycle", "motorcycle"], mean, std, widths=[16, 32, 32])
    net = model.build_model(config)
    inputs = model.to_tensor(images, config)
    net.init_whitening(inputs[:200])
    optimizer = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad], lr=0.05, momentum=0.9
    )
    net.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = torch.randint(0, len(inputs), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(
            net(inputs[batch]), torch.from_numpy(labels)[batch]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    directory = tmp_path_factory.mktemp("model")
    model.save_model(net, config, directory)
    sizes = [len(png(image)) for image in vehicles.train_images]
    model_code.profile().write_baseline(
        directory,
        net,
        config,
        vehicles.train_images[800:],
        sizes[800:],
        vehicles.train_images,
        sizes,
    )
    return directory


@pytest.fixture(scope="session")
def predict(model_dir: Path):
    """The model's probabilities for uint8 images, as the endpoint answers."""
    net, config = model_code.model().load_model(model_dir)

    def run(images: np.ndarray) -> np.ndarray:
        return model_code.profile().predict(net, config, images)

    return run


START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def capture_line(
    body: bytes,
    probabilities: list[float],
    when: datetime = START,
    content_type: str = "image/png",
    inference_id: str | None = None,
) -> bytes:
    record = capture.build_record(
        input_body=body,
        input_content_type=content_type,
        output_body=json.dumps(probabilities).encode(),
        output_content_type="application/json",
        inference_time=when,
        inference_id=inference_id,
    )
    return capture.encode_lines([record])


def capture_lines(
    images: np.ndarray, probabilities: np.ndarray, start: datetime = START, step_s: float = 1.0
) -> list[bytes]:
    return [
        capture_line(png(image), [float(p) for p in row], start + timedelta(seconds=i * step_s))
        for i, (image, row) in enumerate(zip(images, probabilities, strict=True))
    ]


def model_archive(
    model_dir: Path, with_baseline: bool = True, metrics: dict | None = None
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in model_dir.iterdir():
            if with_baseline or not path.name.startswith("baseline"):
                tar.add(path, arcname=path.name)
        if metrics is not None:
            data = json.dumps(metrics).encode()
            info = tarfile.TarInfo("metrics.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
