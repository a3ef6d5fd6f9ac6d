"""Model compute: the CPU time per image of the inference script's predict_fn, served
network against the reference computation, by batch size.

Measured in one run, on the same model and the 200 test images of the shared archive,
one torch thread (as the endpoint's runners compute):
  reference  predict_fn on the saved network as it is (`model.load_model`: the members
             one after another, each on the image and its mirror), without familiarity
  network    predict_fn on the served network (`model.for_serving`), without familiarity
  two-pass   the served network, then the familiarity check's second pass over the
             trained net's first conv group (`familiarity.distances`), as predict_fn
             computed it before the one pass
  served     predict_fn on what `model_fn` serves: the served network, its familiarity
             features tapped from the same pass (`ServingNet.forward_with_features`)
  bf16       `served` under bfloat16 autocast: a candidate, not served; its answers
             differ, shown by the answer rows
A model without familiarity.npz gets the reference, network and bf16 columns only.
The time is the measuring thread's CPU time (time.thread_time), which other processes on
the machine inflate far less than wall time; each round measures every variant in turn,
and the table shows the median round, per image, and the ratio to the reference.
Below it, on the 200 test images: each variant's right answers and answers past the
workflow's 0.93 gate, how far its probabilities are from the reference's, and on how many
images the class or the side of the gate differs; and on how many images the
familiarity attributes (score and flag) differ from the two-pass ones.

    .venv/bin/python benchmarks/model_compute.py [--model-dir DIR] [--batches 1,2,4,8,32]

Without --model-dir it trains the 60-step quick model and fits its familiarity check
(about a minute).
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

from contract.familiarity import format_attributes, parse_attributes  # noqa: E402
from contract.threshold import DEFAULT_THRESHOLD as GATE  # noqa: E402
from tests import sample_model  # noqa: E402

DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"

Predict = Callable[[np.ndarray], Any]


def variants(model_dir: Path) -> dict[str, Predict]:
    """predict_fn over a batch of uint8 images, for each way of computing it."""
    import torch

    inference = sample_model.code_module("inference")
    classifier = sample_model.code_module("model")
    familiarity_lib = sample_model.code_module("familiarity")
    net, config = classifier.load_model(model_dir)
    served = inference.model_fn(str(model_dir))
    reference = inference.LoadedModel(net, config)
    network = inference.LoadedModel(served.network, config)
    familiarity = served.familiarity

    def two_pass(images: np.ndarray) -> Any:
        predictions = inference.predict_fn(images, network)
        distances = familiarity.distances(net, classifier.to_tensor(images, config))
        scores = familiarity.scores(distances)
        for prediction, score, familiar in zip(
            predictions, scores, familiarity.familiar(distances), strict=True
        ):
            prediction.custom_attributes = format_attributes(float(score), bool(familiar))
        return predictions

    def bfloat16(images: np.ndarray) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return inference.predict_fn(images, served)

    predicts: dict[str, Predict] = {
        "reference": lambda images: inference.predict_fn(images, reference),
        "network": lambda images: inference.predict_fn(images, network),
    }
    if familiarity_lib.load(model_dir) is not None:
        predicts["two-pass"] = two_pass
        predicts["served"] = lambda images: inference.predict_fn(images, served)
    predicts["bf16"] = bfloat16
    return predicts


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
            sample_model.fit_familiarity(args.archive, model_dir)
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
        if "two-pass" in medians:
            ratios += f"  served / two-pass {medians['served'] / medians['two-pass']:.2f}"
        print(f"{batch:>5} " + " ".join(f"{medians[n]:>10.2f}" for n in names) + f"  {ratios}")

    answered = {name: predict(images) for name, predict in predicts.items()}
    answers = {name: np.array(answer) for name, answer in answered.items()}
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
    if "two-pass" in answered:
        two_pass = [prediction.custom_attributes for prediction in answered["two-pass"]]
        unfamiliar = sum(parsed[1] is False for parsed in map(parse_attributes, two_pass) if parsed)
        print(f"\nfamiliarity attributes ({unfamiliar} unfamiliar in the two-pass answers):")
        for name in ("served", "bf16"):
            changed = sum(
                prediction.custom_attributes != expected
                for prediction, expected in zip(answered[name], two_pass, strict=True)
            )
            print(f"{name:>10}: {changed} of {len(two_pass)} differ from the two-pass ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
