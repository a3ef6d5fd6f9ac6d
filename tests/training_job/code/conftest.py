"""What the tests of training_job/code share: the code directory on sys.path (as SageMaker
puts it there), and a small staged sample of the shared CIFAR-100 archive laid out as
SageMaker's training channels."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# test_baseline_profile.py profiles the monitor tests' small trained model and images:
# shared, rather than trained twice.
from tests.training_job.monitor.conftest import model_dir, vehicles  # noqa: F401
from training_job import model_code

CODE_DIR = model_code.CODE_DIR
# The container code imports its siblings by name (`import model`), as in SageMaker.
model_code.put_on_path()

CLASSES = {8: 0, 48: 1}  # CIFAR-100 fine labels of bicycle and motorcycle -> our labels


def stage_channels(archive: Path, root: Path, per_class: dict[str, int]) -> dict[str, Path]:
    """Write `per_class[split]` images of each class as lossless PNGs plus `<split>.lst`,
    in the four channel directories train.py reads."""
    channels: dict[str, Path] = {}
    with tarfile.open(archive) as tar:
        for split, count in per_class.items():
            member = tar.extractfile(f"cifar-100-python/{split}")
            assert member is not None
            document = pickle.load(member, encoding="bytes")
            images_dir = root / split
            lst_dir = root / f"{split}_lst"
            images_dir.mkdir(parents=True)
            lst_dir.mkdir(parents=True)
            taken = {0: 0, 1: 0}
            lines = []
            for row, (pixels, fine, name) in enumerate(
                zip(
                    document[b"data"], document[b"fine_labels"], document[b"filenames"], strict=True
                )
            ):
                label = CLASSES[fine]
                if taken[label] == count:
                    continue
                taken[label] += 1
                filename = name.decode()
                image = np.asarray(pixels, dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                (images_dir / filename).write_bytes(buffer.getvalue())
                lines.append(f"{row}\t{label}\t{filename}\n")
            (lst_dir / f"{split}.lst").write_text("".join(lines))
            channels[split] = images_dir
            channels[f"{split}_lst"] = lst_dir
    return channels


@pytest.fixture(scope="session")
def staged_sample(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """30 training and 10 test images of each class, staged as SageMaker channels."""
    root = tmp_path_factory.mktemp("channels")
    return stage_channels(
        shared_data / "cifar-100-python-vehicles.tar.gz", root, {"train": 30, "test": 10}
    )
