"""Unfamiliar photos: how many photos of neither class get past the whole gate.

The whole gate is the workflow's: confident (best probability >= the threshold, 0.93) and
familiar (the model's familiarity check, training_job/code/familiarity.py). For a trained
model directory (train.py's output, with familiarity.npz), per set of photos it prints:

  past gate        the share past the confidence gate alone (what routed before)
  past whole gate  the share confident and familiar (what routes now)
  right past       of the labelled photos past the whole gate, the share answered right
  AUROC            how well the familiarity distance tells the set from the clean test
                   photos (1: perfectly; 0.5: not at all, which is right for a shifted
                   bicycle, still a bicycle)
  FPR@95TPR        the set's share counted familiar at the distance that keeps 95 % of
                   the clean test photos familiar

Sets: the non-vehicle photos of tests/non_vehicle_photos.py, procedural (numpy and PIL:
noise, blur, gradients, textures, text, shapes, night sky, clouds, parcels) and crops of
the images installed packages ship (matplotlib's and scipy's sample images; never looked
at while choosing the method); the CIFAR test photos; the test photos under each shift
of training_job/monitor/shifts.py at its middle level.

  .venv/bin/python benchmarks/unfamiliar_photos.py MODEL_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from contract.threshold import DEFAULT_THRESHOLD  # noqa: E402
from tests import non_vehicle_photos, sample_model  # noqa: E402
from training_job.monitor.shifts import SHIFTS  # noqa: E402

DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"
NON_VEHICLE_COUNT = 200
MIDDLE = 1


def auroc(familiar_distances: np.ndarray, other_distances: np.ndarray) -> float:
    """P(an other photo is farther than a familiar one), ties counted half."""
    farther = (other_distances[None, :] > familiar_distances[:, None]).mean()
    tied = (other_distances[None, :] == familiar_distances[:, None]).mean()
    return float(farther + tied / 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a trained model directory")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args(argv)

    model = sample_model.code_module("model")
    familiarity_lib = sample_model.code_module("familiarity")
    imaging = sample_model.code_module("imaging")
    net, config = model.load_model(args.model_dir)
    familiarity = familiarity_lib.load(args.model_dir)
    if familiarity is None:
        raise SystemExit(f"{args.model_dir} has no {familiarity_lib.FAMILIARITY_FILE}")
    test_images, test_labels = sample_model.load_split(args.archive, "test")

    def measure(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = model.to_tensor(images, config)
        return model.predict(net, batch).numpy(), familiarity.distances(net, batch)

    test_probabilities, test_distances = measure(test_images)
    cut_95 = float(np.quantile(test_distances, 0.95))
    rng = np.random.default_rng(0)
    packages = non_vehicle_photos.from_packages(NON_VEHICLE_COUNT, 1)
    sets: list[tuple[str, np.ndarray, np.ndarray | None]] = [
        ("test photos", test_images, test_labels),
        ("non-vehicle, procedural", non_vehicle_photos.procedural(NON_VEHICLE_COUNT, 0), None),
        ("non-vehicle, package images", packages, None),
    ]
    for name, shift in SHIFTS.items():
        uploads = shift.uploads(test_images, MIDDLE, rng)
        shifted = np.stack([imaging.decode(body) for body, _type in uploads])
        sets.append((f"test, {name}", shifted, test_labels))

    print(
        f"model {args.model_dir}: distance threshold {familiarity.threshold:.3f} "
        f"({len(familiarity.calibration)} held-out photos, familiar share "
        f"{familiarity.familiar_share:.0%}), confidence threshold {args.threshold}"
    )
    header = f"{'set':32s} {'past gate':>9s} {'past whole':>10s} {'right past':>10s} "
    print(header + f"{'AUROC':>6s} {'FPR@95TPR':>9s}")
    for name, images, labels in sets:
        if images is test_images:
            probabilities, distances = test_probabilities, test_distances
        else:
            probabilities, distances = measure(images)
        confident = probabilities.max(1) >= args.threshold
        passed = confident & familiarity.familiar(distances)
        right = ""
        if labels is not None and passed.any():
            right = f"{(probabilities.argmax(1) == labels)[passed].mean():.4f}"
        separation = "" if images is test_images else f"{auroc(test_distances, distances):.3f}"
        false_positive = "" if images is test_images else f"{(distances <= cut_95).mean():.3f}"
        print(
            f"{name:32s} {confident.mean():9.3f} {passed.mean():10.3f} {right:>10s} "
            f"{separation:>6s} {false_positive:>9s}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
