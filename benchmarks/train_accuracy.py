"""Training accuracy: the default recipe over several seeds, against the reference.

For each seed, trains with train.py's default hyperparameters and reads the test accuracy
from the job's metrics.json; prints seed, test accuracy, wall seconds and the peak memory
of the training process, then the mean, and whether the goals are met:
  mean test accuracy >= 0.95 over the seeds (the reference, SageMaker's built-in
  image-classification job, reaches 0.83), and every run under 10 minutes wall.

Two ways to run it:
  --direct           stage the shared archive into a work directory and run
                     training_job/code/train.py with the SageMaker environment contract
  --bucket BUCKET    through the local-mode launcher, `python -m training_job train
                     --mode local` (data staged in BUCKET; the local AWS's variables are
                     read from .local/aws.env, as `make local-up` writes them)

and one way to choose hyperparameters without the test set:
  --cv K             K-fold stratified cross-validation over the 1,000 *train* images
                     only, in-process with training_loop.py's own fit(): prints each fold's
                     validation accuracy and the pooled mean (every train image is
                     validated once, so the estimate rests on 1,000 images, not 100).
                     Fold k trains with seed k, so two recipes compared on the same
                     folds are paired. Also the share past the 0.93 gate, its accuracy
                     and the ECE, each fold's temperature fit on the other folds.

  .venv/bin/python benchmarks/train_accuracy.py --direct
  .venv/bin/python benchmarks/train_accuracy.py --cv 3 --train-arg=--members --train-arg=4

Per seed it also prints the test ECE and the workflow's 0.93 confidence gate: the share
of test images past it and how many of those are right (goal: >= 85%, >= 99.5%).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from contract.decisions import CLASSES  # noqa: E402
from contract.manifest import LstEntry, format_lst  # noqa: E402
from contract.threshold import DEFAULT_THRESHOLD  # noqa: E402
from training_job import model_code  # noqa: E402
from training_job.data import cifar  # noqa: E402
from training_job.data.stage import encode_png  # noqa: E402

TRAIN_SCRIPT = REPO_ROOT / "training_job" / "code" / "train.py"
DEFAULT_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"
REFERENCE_ACCURACY = 0.83  # SageMaker's built-in image-classification job (the reference)
GOAL_ACCURACY = 0.95
GOAL_WALL_SECONDS = 600.0
GOAL_SHARE_PASSED = 0.85  # of the test images past the workflow's 0.93 confidence gate
GOAL_ACCURACY_PASSED = 0.995  # of those past it


@dataclass
class Result:
    seed: int
    test_accuracy: float
    val_accuracy: float
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    ece: float
    share_passed: float
    accuracy_passed: float

    @classmethod
    def from_metrics(
        cls, seed: int, metrics: dict[str, Any], wall: float, cpu: float, rss: float
    ) -> Result:
        gate = metrics["confidence_gate"]
        return cls(
            seed,
            metrics["test_accuracy"],
            metrics["val_accuracy"],
            wall,
            cpu,
            rss,
            metrics["expected_calibration_error"],
            gate["share_passed"],
            gate["accuracy_passed"],
        )


def stage_channels(archive_path: Path, root: Path) -> dict[str, Path]:
    """The four channel directories train.py reads: PNGs, and the .lst beside them."""
    archive = cifar.read_archive(archive_path)
    label_of = {archive.fine_label_names.index(name): label for label, name in enumerate(CLASSES)}
    channels = {}
    for split_name in ("train", "test"):
        split = archive.split(split_name)
        images_dir, lst_dir = root / split_name, root / f"{split_name}_lst"
        images_dir.mkdir(parents=True)
        lst_dir.mkdir(parents=True)
        entries = []
        for row, (fine, filename) in enumerate(
            zip(split.fine_labels, split.filenames, strict=True)
        ):
            if fine in label_of:
                entries.append(LstEntry(row, label_of[fine], filename))
                png = encode_png(cifar.row_to_image(split.data[row]))
                (images_dir / filename).write_bytes(png)
        (lst_dir / f"{split_name}.lst").write_text(format_lst(entries))
        channels[split_name], channels[f"{split_name}_lst"] = images_dir, lst_dir
    return channels


def run_measured(
    command: list[str], env: dict[str, str], log: Path
) -> tuple[int, float, float, float]:
    """Exit code, wall seconds, CPU seconds and peak RSS (MiB) of one child process tree."""
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        # wait4 gives this child's own rusage (its waited-for descendants included).
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    return process.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def train_direct(
    seed: int, channels: dict[str, Path], work: Path, extra: list[str], threads: int
) -> Result:
    job = work / f"seed-{seed}"
    env = dict(os.environ)
    env.update(
        SM_MODEL_DIR=str(job / "model"),
        SM_OUTPUT_DATA_DIR=str(job / "output" / "data"),
        SM_OUTPUT_DIR=str(job / "output"),
        SM_NUM_CPUS=str(threads),
        SM_NUM_GPUS="0",
        **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()},
    )
    (job / "output").mkdir(parents=True)
    command = [sys.executable, str(TRAIN_SCRIPT), "--seed", str(seed), *extra]
    # contract/ is beside train.py in a job (its dependencies); here, at the repo's root.
    env["PYTHONPATH"] = str(REPO_ROOT)
    code, wall, cpu, rss = run_measured(command, env, job / "train.log")
    if code != 0:
        raise SystemExit(f"seed {seed}: train.py exited {code}; see {job / 'train.log'}")
    metrics = json.loads((job / "model" / "metrics.json").read_text())
    return Result.from_metrics(seed, metrics, wall, cpu, rss)


def local_aws_env() -> dict[str, str]:
    path = REPO_ROOT / ".local" / "aws.env"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: start the local AWS with `make local-up`")
    env = dict(os.environ)
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            words = words[1:]
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def train_through_launcher(seed: int, bucket: str, work: Path, extra: list[str]) -> Result:
    import boto3

    env = local_aws_env()
    job_name = f"bench-accuracy-{int(time.time())}-seed-{seed}"
    command = [
        sys.executable,
        "-m",
        "training_job",
        "train",
        "--mode",
        "local",
        "--bucket",
        bucket,
        "--job-name",
        job_name,
        "--seed",
        str(seed),
        *[f"--hyperparameter={item}" for item in extra],
    ]
    log = work / f"seed-{seed}.log"
    code, wall, cpu, rss = run_measured(command, env | {"PYTHONPATH": str(REPO_ROOT)}, log)
    if code != 0:
        raise SystemExit(f"seed {seed}: the launcher exited {code}; see {log}")
    s3 = boto3.client("s3", endpoint_url=env.get("AWS_ENDPOINT_URL"))
    key = f"models/{job_name}/output/metrics.json"
    metrics = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return Result.from_metrics(seed, metrics, wall, cpu, rss)


def cross_validate(archive_path: Path, folds: int, extra: list[str], threads: int) -> int:
    """K-fold validation accuracy of train.py's recipe (with `extra`) on train only."""
    import numpy as np
    import torch

    data, model = model_code.data(), model_code.model()
    hyperparameters, training_loop = model_code.hyperparameters(), model_code.training_loop()
    metrics = model_code.metrics()

    torch.set_num_threads(threads)
    archive = cifar.read_archive(archive_path)
    split = archive.split("train")
    label_of = {archive.fine_label_names.index(name): label for label, name in enumerate(CLASSES)}
    rows = [row for row, fine in enumerate(split.fine_labels) if fine in label_of]
    images = np.stack([cifar.row_to_image(split.data[row]) for row in rows])
    labels = np.array([label_of[split.fine_labels[row]] for row in rows], dtype=np.int64)
    everything = data.Split(images, labels, [0] * len(rows))
    # Folds stratified by class, fixed by one seed so every recipe sees the same folds.
    rng = np.random.default_rng(1234)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold_of[members] = np.arange(len(members)) % folds
    logits = torch.zeros(len(labels), len(CLASSES), dtype=torch.float64)
    started = time.monotonic()
    for fold in range(folds):
        train_indices, val_indices = (
            np.flatnonzero(fold_of != fold),
            np.flatnonzero(fold_of == fold),
        )
        args = hyperparameters.build_parser().parse_args([*extra, "--seed", str(fold)])
        hp = hyperparameters.Hyperparameters.from_args(args)
        train_part = data.subset(everything, train_indices)
        val_part = data.subset(everything, val_indices)
        net, config, _ = training_loop.fit(
            hp, train_part, val_part, torch.device("cpu"), progress=False
        )
        with torch.no_grad():
            logits[val_indices] = net(model.to_tensor(val_part.images, config)).double()
        fold_correct = logits[val_indices].argmax(1).numpy() == val_part.labels
        print(
            f"fold {fold}: {len(train_indices)} train, {len(val_indices)} val, "
            f"val accuracy {fold_correct.mean():.4f}, "
            f"{time.monotonic() - started:.0f} s wall, "
            f"{cpu_seconds_so_far():.0f} s CPU so far",
            flush=True,
        )
    # The confidence gate needs calibrated probabilities: each fold's temperature is fit on
    # the other folds' answers (their models never saw this fold), as train.py fits it on
    # a split its model never saw.
    probabilities = torch.zeros_like(logits)
    for fold in range(folds):
        inside, outside = fold_of == fold, fold_of != fold
        temperature = metrics.temperature_for(logits[outside], labels[outside])
        probabilities[inside] = (logits[inside] / temperature).softmax(1)
    correct = probabilities.argmax(1).numpy() == labels
    gate = metrics.confidence_gate(probabilities.numpy(), labels, DEFAULT_THRESHOLD)
    ece = metrics.expected_calibration_error(probabilities.numpy(), labels)
    recipe = " ".join(extra) or "defaults"
    print(f"\ntrain.py {recipe}, {folds}-fold CV over train ({len(labels)} images)")
    print(f"pooled validation accuracy {correct.mean():.4f} ({int(correct.sum())}/{len(labels)})")
    print(
        f"past the {DEFAULT_THRESHOLD} gate {gate['share_passed']:.3f}, "
        f"{gate['accuracy_passed']:.4f} of them right ({gate['wrong_passed']} wrong); "
        f"ECE {ece:.4f} (temperatures fit across folds)"
    )
    return 0


def cpu_seconds_so_far() -> float:
    """CPU time of this process and its finished children (the member processes)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def print_table(results: list[Result]) -> bool:
    print(
        f"{'seed':>4}  {'test acc':>8}  {'val acc':>7}  {'wall s':>7}  {'cpu s':>7}  "
        f"{'peak RSS MiB':>12}  {'test ECE':>8}  {'past gate':>9}  {'acc past':>8}"
    )
    for r in results:
        print(
            f"{r.seed:>4}  {r.test_accuracy:>8.4f}  {r.val_accuracy:>7.4f}  "
            f"{r.wall_seconds:>7.1f}  {r.cpu_seconds:>7.1f}  {r.peak_rss_mib:>12.0f}  "
            f"{r.ece:>8.4f}  {r.share_passed:>9.3f}  {r.accuracy_passed:>8.4f}"
        )
    mean = sum(r.test_accuracy for r in results) / len(results)
    slowest = max(r.wall_seconds for r in results)
    print(
        f"mean  {mean:>8.4f}   (reference {REFERENCE_ACCURACY:.2f}: "
        f"{mean - REFERENCE_ACCURACY:+.4f})"
    )
    accuracy_ok = mean >= GOAL_ACCURACY
    time_ok = slowest < GOAL_WALL_SECONDS
    print(
        f"goal mean test accuracy >= {GOAL_ACCURACY}: {'PASS' if accuracy_ok else 'FAIL'} "
        f"({mean:.4f})"
    )
    print(
        f"goal every run < {GOAL_WALL_SECONDS:.0f} s wall: {'PASS' if time_ok else 'FAIL'} "
        f"(slowest {slowest:.1f} s)"
    )
    gate_ok = all(
        r.share_passed >= GOAL_SHARE_PASSED and r.accuracy_passed >= GOAL_ACCURACY_PASSED
        for r in results
    )
    print(
        f"goal every seed >= {GOAL_SHARE_PASSED:.0%} of test images past the 0.93 gate, "
        f">= {GOAL_ACCURACY_PASSED:.1%} of them right: {'PASS' if gate_ok else 'FAIL'}"
    )
    return accuracy_ok and time_ok and gate_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--direct", action="store_true", help="run train.py directly on data staged from --archive"
    )
    how.add_argument("--bucket", help="run through the local-mode launcher on this bucket")
    how.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="K-fold cross-validation over the train images only (no test set), to "
        "compare recipes; --threads sets the torch threads",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument(
        "--archive",
        type=Path,
        default=DEFAULT_ARCHIVE,
        help="the CIFAR-100 archive to stage (--direct; default: the shared one)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="SM_NUM_CPUS for train.py (--direct), or this process's torch threads (--cv) "
        "(default: all CPUs, as SageMaker sets it). With 2 or more the ensemble's members "
        "train in parallel processes, threads divided among them; with 1, one after "
        "another in one thread",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep channels, models and logs here (default: a temporary dir)",
    )
    parser.add_argument(
        "--train-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for train.py (--direct, e.g. --train-arg=--epochs "
        "--train-arg=10) or NAME=VALUE hyperparameter (launcher); repeatable",
    )
    args = parser.parse_args(argv)
    if args.cv is not None:
        if args.cv < 2:
            parser.error(f"--cv: needs at least 2 folds, got {args.cv}")
        return cross_validate(args.archive, args.cv, args.train_arg, args.threads)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="train-accuracy-") as scratch:
        work = args.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        results = []
        if args.direct:
            channels = stage_channels(args.archive, work / "channels")
        for seed in seeds:
            if args.direct:
                result = train_direct(seed, channels, work, args.train_arg, args.threads)
            else:
                result = train_through_launcher(seed, args.bucket, work, args.train_arg)
            print(
                f"seed {seed}: test accuracy {result.test_accuracy:.4f}, "
                f"{result.wall_seconds:.0f} s",
                flush=True,
            )
            results.append(result)
    recipe = " ".join(args.train_arg) or "defaults"
    mode = "direct" if args.direct else "local-mode launcher"
    print(f"\ntrain.py {recipe}, {os.cpu_count()} CPUs, {args.threads} threads, {mode}")
    return 0 if print_table(results) else 1


if __name__ == "__main__":
    sys.exit(main())
