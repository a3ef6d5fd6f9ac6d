"""Review loop: do the reviewers' answers make the next model better?

For each seed (0, 1, 2 by default), without ever training on the test split:
  1. hold back HOLD_BACK (40%) of each class of the train split, chosen by the seed; the
     initial model trains on the rest (train.py, run as SageMaker runs it);
  2. the held-back photos arrive as new uploads and go through the gate as the workflow
     takes them: each photo's PNG bytes are classified as the endpoint does (inference.py's
     model_fn, input_fn, predict_fn), a photo whose best probability is below
     contract.threshold's threshold is stopped (queued as doubtful), and a photo that
     passed is audited when the threshold filter's own `in_audit_sample(image id,
     DEFAULT_AUDIT_RATE)` says so (handlers/threshold_filter.py: a SHA-256 of the photo's
     id, so the same photo is always sampled or never, whatever the model). This applies
     the workflow's rules in this process; it does not run the local Step Functions
     workflow (400 photos x 3 seeds through the local AWS would cost more than the
     trainings on this machine);
  3. "review": the stopped and audited photos get their true labels, written as a
     reviewed.lst and handed to train.py as its `reviewed` channels, exactly what `train
     --include-reviewed` gives the job (the launcher's S3 checks are not exercised here);
  4. three retrainings with the initial model's data, seed and validation split, plus:
       reviewed  the reviewed photos (stopped + audited);
       random    as many held-back photos, chosen at random (labelling without the gate);
       all       every held-back photo (the whole train split labelled);
       erring    the reviewed photos as a reviewer who errs on --error-rate (5%) of answers
                 labels them (training_job/review/scripted.py's SimulatedPerson);
       checked   the same answers after the review store's agreement check
                 (training_job/review/agreement.py): an answer the initial model
                 contradicts strongly gets a second, independent reviewer's answer and is
                 trained on only if the two agree;
     and each model, the initial one too, is scored on the test split: accuracy, the share
     of test photos past the gate, the accuracy of those, the temperature train.py fit.
     The gate's tables also show what each labelling policy adds (class mix, the initial
     model's confidence on it) and, for several levels of the agreement check, how many
     second opinions it asks for and how many wrong answers still become training lines.

  .venv/bin/python benchmarks/review_loop.py --quick     # development: 20 epochs, 1 member
  .venv/bin/python benchmarks/review_loop.py             # train.py's own defaults
  .venv/bin/python benchmarks/review_loop.py --quick --arms reviewed,random --seeds 3,4
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from contract.decisions import CLASSES, DEFAULT_AUDIT_RATE, image_id  # noqa: E402
from contract.manifest import LstEntry, format_lst  # noqa: E402
from contract.threshold import DEFAULT_THRESHOLD  # noqa: E402
from handlers.threshold_filter import in_audit_sample  # noqa: E402
from training_job import model_code  # noqa: E402
from training_job.data import cifar  # noqa: E402
from training_job.data.stage import encode_png  # noqa: E402
from training_job.review.agreement import (  # noqa: E402
    SECOND_OPINION_BELOW,
    contradicts_model,
    training_answer,
)
from training_job.review.scripted import SimulatedPerson  # noqa: E402

TRAIN_SCRIPT = REPO_ROOT / "training_job" / "code" / "train.py"
DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"
# 40% held back: the initial model (600 images) must be a plausible production model, and
# the held-back stream (400 photos) must stop enough photos for the answers to matter
# (about a quarter of them): at 20% the reviewed set is ~50 photos, within the noise of
# 200 test images; at 60% the initial model is a weak one no one would deploy.
HOLD_BACK = 0.4
# Uploads land under incoming/ in the workflow's bucket; the id is what the audit hashes.
UPLOAD_BUCKET = "scones-unlimited-local"
QUICK = ["--epochs", "20", "--members", "1"]
ARMS = ("initial", "reviewed", "random", "all", "erring", "checked")
# The simulated reviewer's share of wrong answers (issue 23: "errs on 5 % of answers").
ERROR_RATE = 0.05
# Levels of agreement.SECOND_OPINION_BELOW the gate's table compares (no training needed).
SECOND_OPINION_LEVELS = (0.5, 0.3, 0.2, 0.1)


@dataclass
class Photo:
    entry: LstEntry
    png: bytes


@dataclass
class Score:
    seed: int
    arm: str
    added: int
    test_accuracy: float
    past_gate: float
    accuracy_past_gate: float
    cpu_seconds: float
    temperature: float


def stage(archive_path: Path, images_dir: Path) -> dict[str, list[Photo]]:
    """Every train and test photo of the two classes as a PNG in `images_dir` (one
    directory serves every channel: train.py reads only what a .lst names)."""
    archive = cifar.read_archive(archive_path)
    label_of = {archive.fine_label_names.index(name): label for label, name in enumerate(CLASSES)}
    images_dir.mkdir(parents=True, exist_ok=True)
    photos: dict[str, list[Photo]] = {}
    for split_name in ("train", "test"):
        split = archive.split(split_name)
        photos[split_name] = []
        for row, (fine, filename) in enumerate(
            zip(split.fine_labels, split.filenames, strict=True)
        ):
            if fine in label_of:
                png = encode_png(cifar.row_to_image(split.data[row]))
                (images_dir / filename).write_bytes(png)
                photos[split_name].append(Photo(LstEntry(row, label_of[fine], filename), png))
    return photos


def hold_back(photos: list[Photo], fraction: float, seed: int) -> tuple[list[Photo], list[Photo]]:
    """(kept, held back): `fraction` of each class held back, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    labels = np.array([photo.entry.label for photo in photos])
    held: set[int] = set()
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.update(int(i) for i in members[: round(len(members) * fraction)])
    kept = [photo for i, photo in enumerate(photos) if i not in held]
    return kept, [photo for i, photo in enumerate(photos) if i in held]


def lst_dir(directory: Path, name: str, photos: list[Photo]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(format_lst(photo.entry for photo in photos))
    return directory


def train(
    job: Path,
    images: Path,
    train_photos: list[Photo],
    test_lst: Path,
    added: list[Photo] | None,
    seed: int,
    extra: list[str],
    threads: int,
) -> tuple[Path, float]:
    """Run train.py as a job; return its model directory and its CPU seconds."""
    channels = {
        "train": images,
        "train_lst": lst_dir(job / "train_lst", "train.lst", train_photos),
        "test": images,
        "test_lst": test_lst,
    }
    if added is not None:  # the channels `train --include-reviewed` adds
        channels["reviewed"] = images
        channels["reviewed_lst"] = lst_dir(job / "reviewed_lst", "reviewed.lst", added)
    env = {name: value for name, value in os.environ.items() if not name.startswith("SM_")}
    env.update(
        SM_MODEL_DIR=str(job / "model"),
        SM_OUTPUT_DATA_DIR=str(job / "output" / "data"),
        SM_OUTPUT_DIR=str(job / "output"),
        SM_NUM_CPUS=str(threads),
        SM_NUM_GPUS="0",
        PYTHONPATH=str(REPO_ROOT),  # contract/ is beside train.py in a job; here, at the root
        **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()},
    )
    (job / "output").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(TRAIN_SCRIPT), "--seed", str(seed), *extra]
    log = job / "train.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"train.py failed; see {log}")
    return job / "model", usage.ru_utime + usage.ru_stime


def probabilities(model_dir: Path, photos: list[Photo]) -> np.ndarray:
    """What the endpoint answers for each photo: inference.py on the PNG bytes."""
    model_code.put_on_path()  # inference.py imports its siblings by name, as in the container
    inference = importlib.import_module("inference")
    model = inference.model_fn(str(model_dir))
    arrays = [inference.input_fn(photo.png, "image/png") for photo in photos]
    return np.array(inference.predict_fn(arrays, model))


def score(
    seed: int,
    arm: str,
    added: int,
    model_dir: Path,
    test: list[Photo],
    threshold: float,
    cpu: float,
) -> Score:
    probs = probabilities(model_dir, test)
    labels = np.array([photo.entry.label for photo in test])
    correct = probs.argmax(1) == labels
    passed = probs.max(1) >= threshold
    return Score(
        seed=seed,
        arm=arm,
        added=added,
        test_accuracy=float(correct.mean()),
        past_gate=float(passed.mean()),
        accuracy_past_gate=float(correct[passed].mean()) if passed.any() else float("nan"),
        cpu_seconds=cpu,
        temperature=json.loads((model_dir / "metrics.json").read_text())["temperature"],
    )


def gate(
    model_dir: Path, stream: list[Photo], threshold: float, audit_rate: float
) -> dict[str, Any]:
    """The held-back photos through the gate: which a person would be asked about."""
    probs = probabilities(model_dir, stream)
    stopped = probs.max(1) < threshold
    audited = np.array(
        [
            not stop
            and in_audit_sample(image_id(UPLOAD_BUCKET, f"incoming/{p.entry.filename}"), audit_rate)
            for stop, p in zip(stopped, stream, strict=True)
        ]
    )
    labels = np.array([photo.entry.label for photo in stream])
    return {
        "probabilities": probs,
        "asked": stopped | audited,
        "stopped": int(stopped.sum()),
        "audited": int(audited.sum()),
        "stream_accuracy": float((probs.argmax(1) == labels).mean()),
        "stopped_accuracy": float((probs.argmax(1) == labels)[stopped].mean())
        if stopped.any()
        else float("nan"),
    }


def run_seed(
    seed: int,
    photos: dict[str, list[Photo]],
    work: Path,
    args: argparse.Namespace,
    progress: tqdm,
) -> tuple[list[Score], dict[str, Any]]:
    images, test = work / "images", photos["test"]
    test_lst = work / "test_lst"
    kept, stream = hold_back(photos["train"], args.hold_back, seed)
    base = work / f"seed-{seed}"

    def step(arm: str, added: list[Photo] | None) -> Score:
        progress.set_description(f"seed {seed}: {arm}")
        model_dir, cpu = base / arm / "model", float("nan")
        if not (args.resume and (model_dir / "metrics.json").is_file()):
            model_dir, cpu = train(
                base / arm, images, kept, test_lst, added, seed, args.train_arg, args.threads
            )
        result = score(seed, arm, len(added or []), model_dir, test, args.threshold, cpu)
        progress.update()
        return result

    scores = [step("initial", None)]
    flow = gate(base / "initial" / "model", stream, args.threshold, args.audit_rate)
    probs, asked = flow.pop("probabilities"), flow.pop("asked")
    reviewed = [photo for photo, ask in zip(stream, asked, strict=True) if ask]
    rng = np.random.default_rng(1000 + seed)
    chosen = sorted(rng.choice(len(stream), size=len(reviewed), replace=False))
    erring, checked, counts = answered_by_erring_reviewer(
        reviewed, probs[asked], args.error_rate, seed
    )
    added = {
        "reviewed": reviewed,
        "random": [stream[i] for i in chosen],
        "all": stream,
        "erring": erring,
        "checked": checked,
    }
    flow.update(counts)
    # What the two labelling policies add: the class mix, and how sure the old model was.
    for name, picked in (("reviewed", np.flatnonzero(asked)), ("random", np.array(chosen))):
        flow[f"{name}_motorcycle_share"] = float(np.mean([stream[i].entry.label for i in picked]))
        flow[f"{name}_old_confidence"] = float(probs[picked].max(1).mean())
    for arm in args.arms:
        if arm != "initial":
            scores.append(step(arm, added[arm]))
    flow.update(seed=seed, kept=len(kept), held_back=len(stream), reviewed=len(reviewed))
    return scores, flow


def relabelled(photo: Photo, answer: str) -> Photo:
    entry = photo.entry
    return Photo(LstEntry(entry.row, CLASSES.index(answer), entry.filename), photo.png)


def answered_by_erring_reviewer(
    reviewed: list[Photo], probs: np.ndarray, error_rate: float, seed: int
) -> tuple[list[Photo], list[Photo], dict[str, Any]]:
    """The reviewed photos as a reviewer who errs on `error_rate` of answers labels them:
    (every answer as given, what the agreement check keeps, counts). The check is the
    review store's (training_job/review/agreement.py): an answer the old model (`probs`,
    what the decision item holds) contradicts strongly gets a second, independent
    reviewer's answer, and is trained on only if the two agree."""
    first_person = SimulatedPerson(error_rate, seed)
    second_person = SimulatedPerson(error_rate, 10_000 + seed)
    truths = [CLASSES[photo.entry.label] for photo in reviewed]
    firsts = [first_person.answer(truth) for truth in truths]
    seconds = [second_person.answer(truth) for truth in truths]  # asked only where needed
    wrong_answers = sum(first != truth for first, truth in zip(firsts, truths, strict=True))
    counts: dict[str, Any] = {"wrong_answers": wrong_answers}
    checked: list[Photo] = []
    # The product's level last: its photos are the `checked` arm's.
    for level in (*SECOND_OPINION_LEVELS, SECOND_OPINION_BELOW):
        asked = wrong = held = 0
        kept: list[Photo] = []
        for photo, p, truth, first, second in zip(
            reviewed, probs, truths, firsts, seconds, strict=True
        ):
            needed = contradicts_model(p, first, below=level)
            asked += needed
            learned = training_answer(first, second if needed else None)
            if learned is None:
                held += 1
                continue
            wrong += learned != truth
            kept.append(relabelled(photo, learned))
        counts[f"second_opinions@{level}"] = asked
        counts[f"held_back@{level}"] = held
        counts[f"wrong_lines@{level}"] = wrong
        checked = kept  # the last level is the product's
    erring = [relabelled(photo, first) for photo, first in zip(reviewed, firsts, strict=True)]
    return erring, checked, counts


def print_tables(scores: list[Score], flows: list[dict[str, Any]], threshold: float) -> None:
    print(f"\nheld-back stream through the gate (threshold {threshold}):")
    print(
        f"{'seed':>4}  {'kept':>5}  {'held back':>9}  {'stopped':>7}  {'audited':>7}  "
        f"{'reviewed':>8}  {'stream acc':>10}  {'stopped acc':>11}"
    )
    for f in flows:
        print(
            f"{f['seed']:>4}  {f['kept']:>5}  {f['held_back']:>9}  {f['stopped']:>7}  "
            f"{f['audited']:>7}  {f['reviewed']:>8}  {f['stream_accuracy']:>10.4f}  "
            f"{f['stopped_accuracy']:>11.4f}"
        )
    print("\nwhat each policy adds (initial model's mean best probability on them):")
    print(
        f"{'seed':>4}  {'reviewed moto':>13}  {'random moto':>11}  {'reviewed conf':>13}  "
        f"{'random conf':>11}"
    )
    for f in flows:
        print(
            f"{f['seed']:>4}  {f['reviewed_motorcycle_share']:>13.2f}  "
            f"{f['random_motorcycle_share']:>11.2f}  {f['reviewed_old_confidence']:>13.3f}  "
            f"{f['random_old_confidence']:>11.3f}"
        )
    levels = sorted({*SECOND_OPINION_LEVELS, SECOND_OPINION_BELOW}, reverse=True)
    print(
        "\nthe erring reviewer's answers: second opinions asked / answers held back / wrong "
        "lines kept, by the level below which the model's probability for the answer asks "
        f"for a second reviewer (the product's: {SECOND_OPINION_BELOW})"
    )
    print(f"{'seed':>4}  {'wrong':>5}  " + "  ".join(f"{f'@{level}':>12}" for level in levels))
    for f in flows:
        cells = "  ".join(
            f"{f[f'second_opinions@{level}']:>4}/{f[f'held_back@{level}']:>3}/"
            f"{f[f'wrong_lines@{level}']:>3}"
            for level in levels
        )
        print(f"{f['seed']:>4}  {f['wrong_answers']:>5}  {cells}")
    print("\non the test split (200 photos):")
    header = (
        f"{'seed':>4}  {'model':<9}  {'added':>5}  {'test acc':>8}  {'past gate':>9}  "
        f"{'acc past gate':>13}  {'temp':>6}  {'cpu s':>6}"
    )
    print(header)
    for s in scores:
        print(
            f"{s.seed:>4}  {s.arm:<9}  {s.added:>5}  {s.test_accuracy:>8.4f}  "
            f"{s.past_gate:>9.4f}  {s.accuracy_past_gate:>13.4f}  {s.temperature:>6.3f}  "
            f"{s.cpu_seconds:>6.0f}"
        )
    arms = [arm for arm in ARMS if any(s.arm == arm for s in scores)]
    for arm in arms:
        rows = [s for s in scores if s.arm == arm]
        print(
            f"{'mean':>4}  {arm:<9}  {statistics.mean(s.added for s in rows):>5.0f}  "
            f"{statistics.mean(s.test_accuracy for s in rows):>8.4f}  "
            f"{statistics.mean(s.past_gate for s in rows):>9.4f}  "
            f"{statistics.mean(s.accuracy_past_gate for s in rows):>13.4f}  "
            f"{statistics.mean(s.temperature for s in rows):>6.3f}"
        )
    by = {(s.seed, s.arm): s for s in scores}
    seeds = sorted({s.seed for s in scores})
    for better, worse in (("reviewed", "random"), ("checked", "reviewed"), ("erring", "reviewed")):
        if not {better, worse} <= set(arms):
            continue
        for measure in ("test_accuracy", "past_gate"):
            gains = [
                getattr(by[seed, better], measure) - getattr(by[seed, worse], measure)
                for seed in seeds
            ]
            shown = ", ".join(f"{gain:+.4f}" for gain in gains)
            print(f"{better} - {worse}, {measure}: {shown} (mean {statistics.mean(gains):+.4f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"development run: train.py {' '.join(QUICK)} (the defaults take ~5 CPU-minutes "
        "a model, 12 models)",
    )
    parser.add_argument(
        "--train-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for train.py (e.g. --train-arg=--epochs --train-arg=10); repeatable",
    )
    parser.add_argument(
        "--hold-back",
        type=float,
        default=HOLD_BACK,
        help=f"share of each class of train held back as new uploads (default {HOLD_BACK})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"the gate (default contract.threshold's {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--audit-rate",
        type=float,
        default=DEFAULT_AUDIT_RATE,
        help=f"share of passed photos audited (default {DEFAULT_AUDIT_RATE})",
    )
    parser.add_argument(
        "--error-rate",
        type=float,
        default=ERROR_RATE,
        help=f"share of wrong answers of the erring reviewer (arms erring, checked; default "
        f"{ERROR_RATE})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="SM_NUM_CPUS for train.py (default 1: faster on a shared 2-core machine)",
    )
    parser.add_argument(
        "--archive", type=Path, default=DEFAULT_ARCHIVE, help="the CIFAR-100 archive"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="keep models and logs here (default: temporary)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument(
        "--arms",
        default=",".join(ARMS),
        help=f"comma-separated models to train and score, of {','.join(ARMS)} (initial is "
        "always trained: the gate needs it)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --work-dir: score a model a previous run left there instead of training "
        "it again (same settings and code only: nothing checks)",
    )
    args = parser.parse_args(argv)
    args.arms = ["initial", *(a for a in args.arms.split(",") if a != "initial")]
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        parser.error(f"--arms: unknown {','.join(unknown)}; choose from {','.join(ARMS)}")
    if args.resume and args.work_dir is None:
        parser.error("--resume needs --work-dir")
    if not 0 <= args.error_rate < 1:
        parser.error(f"--error-rate must be in [0, 1), got {args.error_rate}")
    if not 0 < args.hold_back < 1:
        parser.error(f"--hold-back must be between 0 and 1, got {args.hold_back}")
    if args.quick:
        args.train_arg = [*QUICK, *args.train_arg]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="review-loop-") as scratch:
        work = args.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        photos = stage(args.archive, work / "images")
        lst_dir(work / "test_lst", "test.lst", photos["test"])
        scores, flows = [], []
        with tqdm(total=len(seeds) * len(args.arms), unit="model", file=sys.stderr) as progress:
            for seed in seeds:
                seed_scores, flow = run_seed(seed, photos, work, args, progress)
                scores += seed_scores
                flows.append(flow)
    recipe = " ".join(args.train_arg) or "defaults"
    print(
        f"\ntrain.py {recipe}; hold back {args.hold_back:.0%}; audit rate {args.audit_rate}; "
        f"{time.monotonic() - started:.0f} s wall"
    )
    print_tables(scores, flows, args.threshold)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"recipe": recipe, "gate": flows, "scores": [asdict(s) for s in scores]}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
