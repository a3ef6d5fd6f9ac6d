"""A quickly trained model.tar.gz and real test PNGs, for the endpoint's tests and benchmark.

The images come from the shared CIFAR-100 archive (read by training_job.data.cifar); the
model is the project's network (training_job/code/model.py) after a few SGD steps,
packaged the way the training job packages it: model.pth, model.json and
code/ with inference.py, its sibling modules and contract/.
"""

from __future__ import annotations

import importlib
import io
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from contract import decisions
from training_job import model_code
from training_job.data import cifar

CLASSES = list(decisions.CLASSES)  # ModelConfig takes a list
FINE_LABELS = (8, 48)  # the archive's fine labels of CLASSES, in label order


def code_module(name: str) -> ModuleType:
    """A module of training_job/code, imported as SageMaker's container imports it."""
    model_code.put_on_path()  # the one way onto sys.path for training_job/code
    return importlib.import_module(name)


def load_split(archive: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and 0/1 labels of one split of the archive."""
    data = cifar.read_archive(archive).split(split)
    images = np.stack([cifar.row_to_image(row) for row in data.data])
    labels = np.array([FINE_LABELS.index(label) for label in data.fine_labels])
    return images, labels


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def train_quick_model(archive: Path, model_dir: Path, steps: int = 60, seed: int = 0) -> Path:
    """The project's network after `steps` SGD steps on the train split, saved to model_dir."""
    import torch

    model = code_module("model")
    torch.manual_seed(seed)
    images, labels = load_split(archive, "train")
    mean = (images.reshape(-1, 3).mean(axis=0) / 255).tolist()
    std = (images.reshape(-1, 3).std(axis=0) / 255).tolist()
    config = model.ModelConfig(CLASSES, mean, std)
    network = model.build_model(config)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    generator = np.random.default_rng(seed)
    network.train()
    for _ in range(steps):
        batch = generator.choice(len(images), size=64, replace=False)
        inputs = model.to_tensor(images[batch], config)
        loss = torch.nn.functional.cross_entropy(network(inputs), torch.from_numpy(labels[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.eval()
    model.save_model(network, config, model_dir)
    return model_dir


def fit_familiarity(archive: Path, model_dir: Path) -> Path:
    """Fit the model's familiarity check (training_job/code/familiarity.py) as train.py
    does: on the first 900 train photos, calibrated on the last 100; saved beside it."""
    model = code_module("model")
    familiarity = code_module("familiarity")
    net, config = model.load_model(model_dir)
    images, labels = load_split(archive, "train")
    familiarity.fit(net, config, images[:900], labels[:900], images[900:]).save(model_dir)
    return model_dir


def package_model(
    model_dir: Path, archive_path: Path, code_additions: Mapping[str, str] | None = None
) -> Path:
    """model.tar.gz as the training job writes it: the model files and code/ (copied by
    serving_code.py's own `copy_serving_code`, contract/ included). `code_additions` appends
    text to files of code/ ({"inference.py": "..."}): a version whose code differs."""
    with tempfile.TemporaryDirectory() as scratch:
        code_dir = Path(scratch) / "code"
        code_module("serving_code").copy_serving_code(code_dir)
        for name, addition in (code_additions or {}).items():
            with open(code_dir / name, "a") as source:
                source.write(addition)
        with tarfile.open(archive_path, "w:gz") as tar:
            for name in ("model.pth", "model.json", "familiarity.npz"):
                if (model_dir / name).is_file():  # familiarity.npz: a model that has it
                    tar.add(model_dir / name, arcname=name)
            tar.add(code_dir, arcname="code")
    return archive_path


def claimed_size_png(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims `width` x `height` pixels (a
    decompression bomb's shape: a decoder that trusts the header allocates it all)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
