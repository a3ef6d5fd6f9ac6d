"""Model compute: the CPU time per image of the inference script's predict_fn, served
network against the reference computation, by batch size.

Measured in one run, on the same model and the 200 test images of the shared archive,
one torch thread (as the endpoint's runners compute):
  reference  predict_fn on the saved network as it is (`model.load_model`: the members
             one after another, each on the image and its mirror)
  served     predict_fn on what `model_fn` serves (`model.for_serving`)
  bf16       the served network under bfloat16 autocast: a candidate, not served; its
             answers differ, shown by the answer rows
The time is the measuring thread's CPU time (time.thread_time), which other processes on
the machine inflate far less than wall time; each round measures every variant in turn,
and the table shows the median round, per image, and the ratio to the reference.
Below it, on the 200 test images: each variant's right answers and answers past the
workflow's 0.93 gate, how far its probabilities are from the reference's, and on how many
images the class or the side of the gate differs.

    .venv/bin/python benchmarks/model_compute.py [--model-dir DIR] [--batches 1,2,4,8,32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from contract.threshold import DEFAULT_THRESHOLD as GATE  # noqa: E402
from tests import sample_model  # noqa: E402

DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"

Predict = Callable[[np.ndarray], Any]


def variants(model_dir: Path) -> dict[str, Predict]:
    """predict_fn over a batch of uint8 images, for each way of computing it."""
    import torch

    inference = sample_model.code_module("inference")
    classifier = sample_model.code_module("model")
    net, config = classifier.load_model(model_dir)
    reference = inference.LoadedModel(net, config)
    served = inference.model_fn(str(model_dir))

    def bfloat16(images: np.ndarray) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return inference.predict_fn(images, served)

    return {
        "reference": lambda images: inference.predict_fn(images, reference),
        "served": lambda images: inference.predict_fn(images, served),
        "bf16": bfloat16,
    }


def cpu_ms_per_image(predict: Predict, images: np.ndarray, repeats: int) -> float:
    started = time.thread_time()
    for _ in range(repeats):
        predict(images)
    return 1000 * (time.thread_time() - started) / (repeats * len(images))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="an extracted model directory")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="the CIFAR archive")
    parser.add_argument("--batches", default="1,2,4,8,32", help="batch sizes (%(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per batch size")
    parser.add_argument(
        "--images-per-round", type=int, default=32, help="images per variant per round"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    images, labels = sample_model.load_split(args.archive, "test")
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model_dir
        if model_dir is None:
            print("no --model-dir: training a quick model on the shared archive (about a minute)")
            model_dir = sample_model.train_quick_model(args.archive, Path(work) / "model")
        predicts = variants(model_dir)

    print(f"CPU ms per image of predict_fn, one torch thread, median of {args.rounds} rounds")
    names = list(predicts)
    print(f"{'batch':>5} " + " ".join(f"{name:>10}" for name in names) + "  ratios to reference")
    for batch in [int(size) for size in args.batches.split(",")]:
        chunk = images[:batch]
        repeats = max(1, args.images_per_round // batch)
        for predict in predicts.values():
            predict(chunk)  # warm-up: oneDNN builds its kernels for a new shape once
        rounds: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name, predict in predicts.items():
                rounds[name].append(cpu_ms_per_image(predict, chunk, repeats))
        medians = {name: statistics.median(values) for name, values in rounds.items()}
        ratios = " ".join(
            f"{name} {medians[name] / medians['reference']:.2f}" for name in names[1:]
        )
        print(f"{batch:>5} " + " ".join(f"{medians[n]:>10.2f}" for n in names) + f"  {ratios}")

    answers = {name: np.array(predict(images)) for name, predict in predicts.items()}
    reference = answers["reference"]
    print(f"\nanswers on the {len(images)} test images:")
    for name in names:
        answer = answers[name]
        right = int((answer.argmax(1) == labels).sum())
        past = int((answer.max(1) >= GATE).sum())
        line = f"{name:>10}: {right} right, {past} past the {GATE} gate"
        if name != "reference":
            largest = float(np.abs(answer - reference).max())
            classes = int((answer.argmax(1) != reference.argmax(1)).sum())
            crossed = int(((answer.max(1) >= GATE) != (reference.max(1) >= GATE)).sum())
            line += (
                f"; against the reference: largest probability difference {largest:.1e}, "
                f"{classes} change class, {crossed} change side of the gate"
            )
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
