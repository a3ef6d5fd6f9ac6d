"""Drift detection: detection rate per shift and severity, false alarms on clean traffic.

Trains the classifier with training_loop.py's own `fit` (or loads --model-dir), writes its
baseline as train.py does (the model's answers from the validation split, the input
statistics from the whole train split) with profile.write_baseline, then builds windows of
captured traffic in-process: each request is an upload body (PNG, or what the shift
sends), decoded as the endpoint decodes it, classified by the model, turned into a
capture record by training_job/serving/capture.py and parsed back by the monitor's reader.

Windows hold WINDOW test images drawn without replacement: a simple random sample of the
test split (itself an i.i.d. sample) is an i.i.d. sample, so every two-sample test's
p-value means what it says (a window drawn with replacement repeats images, and KS then
counts a repeat as new evidence). Clean windows are such samples; shifted ones pass them
through a shift of training_job/monitor/shifts.py (its family, three severities each,
fixed there before any measurement), shift the labels (90% motorcycles) or replace them
with synthetic out-of-distribution images (the shared archive holds no other CIFAR
classes): smoothed noise textures and colour-inverted photos.

Methods, each at the same alpha per window:
  monitor     this monitor (every detector, Holm-corrected); `answers` is the share of
              windows whose verdict is "model answers moved" (the rest of its alerts are
              "input drift, model answers unchanged")
  mmd         the monitor's embedding test alone (raw MMD p-value <= alpha)
  bbsd        black-box shift detection (Rabanser et al., "Failing Loudly", 2019): a KS
              test per softmax output, Bonferroni-corrected
  confidence  the reference's method: more low-confidence answers than the baseline
              (the conditional binomial test)

    .venv/bin/python benchmarks/drift_detection.py [--windows 10] [--clean-windows 200]
    .venv/bin/python benchmarks/drift_detection.py --throughput 100000   # report timing
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training_job import model_code  # noqa: E402
from training_job.monitor.analysis import WindowAnalyzer  # noqa: E402
from training_job.monitor.baseline import Baseline  # noqa: E402
from training_job.monitor.captures import parse_record  # noqa: E402
from training_job.monitor.detectors import LowConfidenceDetector  # noqa: E402
from training_job.monitor.drift_monitor import ANSWER_DRIFT, DriftMonitor, holm  # noqa: E402
from training_job.monitor.embedding import Embedder  # noqa: E402
from training_job.monitor.shifts import (  # noqa: E402
    LEVELS,
    SHIFTS,
    Shift,
    Upload,
    as_png,
    encode,
)
from training_job.serving import capture  # noqa: E402

ARCHIVE = REPO.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"
WINDOW = 100
START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def load_split(name: str) -> tuple[np.ndarray, np.ndarray]:
    with tarfile.open(ARCHIVE) as archive:
        member = archive.extractfile(f"cifar-100-python/{name}")
        assert member is not None
        batch = pickle.load(member, encoding="bytes")
    images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.array([0 if y == 8 else 1 for y in batch[b"fine_labels"]])
    return np.ascontiguousarray(images), labels


def training_split(epochs: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """train.py's hyperparameters, the staged train split (PNG byte sizes) and its seeded
    train and validation indices."""
    data = model_code.data()
    images, labels = load_split("train")
    split = data.Split(images, labels, [len(encode(i)) for i in images])
    hp = model_code.hyperparameters().Hyperparameters(epochs=epochs)
    train_idx, val_idx = data.stratified_split(split.labels, hp.val_fraction, hp.seed)
    return hp, split, train_idx, val_idx


def write_baseline(model_dir: Path, net: torch.nn.Module, config: Any) -> None:
    """The baseline as train.py writes it: answers on validation, inputs on the split."""
    _, split, _, val_idx = training_split(1)  # the split does not depend on the epochs
    val = model_code.data().subset(split, val_idx)
    model_code.profile().write_baseline(
        model_dir, net, config, val.images, val.byte_sizes, split.images, split.byte_sizes
    )


def train_model(epochs: int, out: Path) -> Path:
    training_loop, data = model_code.training_loop(), model_code.data()
    hp, split, train_idx, val_idx = training_split(epochs)
    net, config, _ = training_loop.fit(
        hp,
        data.subset(split, train_idx),
        data.subset(split, val_idx),
        torch.device("cpu"),
        progress=False,
    )
    net.eval()
    model_code.model().save_model(net, config, out)
    write_baseline(out, net, config)
    return out


def rewrite_baseline(model_dir: Path, out: Path) -> Path:
    """A copy of a trained model dir whose baseline is written anew, as training writes
    it now (the model was trained by this script with the default seed and split)."""
    shutil.copytree(model_dir, out)
    net, config = model_code.model().load_model(out)
    write_baseline(out, net, config)
    return out


def noise_textures(count: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.random((count, 8, 8, 3)) * 255
    return np.stack(
        [
            np.asarray(
                Image.fromarray(n.astype(np.uint8)).resize((32, 32), Image.Resampling.BICUBIC)
            )
            for n in noise
        ]
    )


class Bench:
    def __init__(
        self,
        model_dir: Path,
        alpha: float,
        permutations: int,
        embedding_sample: int = WINDOW,
        embedding_members: int = 1,
    ) -> None:
        self.baseline = Baseline.from_dir(model_dir)
        self.net, self.config = model_code.model().load_model(model_dir)
        self.imaging = model_code.imaging()
        self.profile = model_code.profile()
        embedder = Embedder(self.net, self.config, embedding_members)
        monitor = DriftMonitor(
            alpha=alpha, permutations=permutations, embedding_dimensions=embedder.dimensions
        ).fit(self.baseline)
        self.analyzer = WindowAnalyzer(self.baseline, embedder, monitor, embedding_sample)
        self.alpha = alpha
        self.confidence = LowConfidenceDetector().fit(self.baseline)

    def records(self, uploads: list[Upload]) -> list:
        decoded = np.stack([self.imaging.decode(body) for body, _ in uploads])
        probabilities = self.profile.predict(self.net, self.config, decoded)
        lines = [
            capture.encode_lines(
                [
                    capture.build_record(
                        input_body=body,
                        input_content_type=content_type,
                        output_body=json.dumps([round(float(p), 6) for p in row]).encode(),
                        output_content_type="application/json",
                        inference_time=START + timedelta(seconds=i),
                    )
                ]
            )
            for i, ((body, content_type), row) in enumerate(
                zip(uploads, probabilities, strict=True)
            )
        ]
        return [parse_record(line) for line in lines]

    def judge(self, records: list) -> dict[str, bool]:
        result = self.analyzer.analyze(0, records, len(records))
        mmd = any(f.p_value <= self.alpha for f in result.findings if f.test == "mmd")
        probabilities = np.array([r.probabilities for r in records])
        window = type("W", (), {"probabilities": probabilities, "size": len(records)})
        (low,) = holm(self.confidence.test(window), self.alpha)  # type: ignore[arg-type]
        bbsd = (
            min(
                stats.ks_2samp(self.baseline.probabilities[:, k], probabilities[:, k]).pvalue
                for k in range(probabilities.shape[1])
            )
            * probabilities.shape[1]
            <= self.alpha
        )
        return {
            "monitor": result.alert,
            "answers": result.drift == ANSWER_DRIFT,
            "mmd": mmd,
            "bbsd": bool(bbsd),
            "confidence": low.alert,
        }


METHODS = ("monitor", "answers", "mmd", "bbsd", "confidence")


def run_detection(args: argparse.Namespace, bench: Bench) -> None:
    test_images, test_labels = load_split("test")
    if len(test_images) < WINDOW:
        raise SystemExit(f"windows of {WINDOW} need as many test images")
    rng = np.random.default_rng(args.seed)

    def rate(make: Callable[[], list[Upload]], windows: int) -> tuple[dict[str, float], int]:
        hits = dict.fromkeys(METHODS, 0)
        for _ in range(windows):
            for method, alert in bench.judge(bench.records(make())).items():
                hits[method] += alert
        return {m: hits[m] / windows for m in METHODS}, hits["monitor"]

    def clean_sample() -> np.ndarray:
        return test_images[rng.choice(len(test_images), WINDOW, replace=False)]

    started = time.monotonic()
    clean, false_alarms = rate(lambda: as_png(clean_sample()), args.clean_windows)
    interval = stats.binomtest(false_alarms, args.clean_windows).proportion_ci(0.95, method="exact")
    print(
        f"  clean: {clean}; monitor {false_alarms} of {args.clean_windows}, 95% "
        f"Clopper-Pearson {interval.low:.1%} to {interval.high:.1%}",
        file=sys.stderr,
        flush=True,
    )
    rows: list[tuple[str, str, str, dict[str, float]]] = [
        (f"clean (false alarms, {args.clean_windows} windows)", "-", "-", clean)
    ]

    def shifted(shift: Shift, position: int) -> list[Upload]:
        return shift.uploads(clean_sample(), position, rng)

    names = args.shifts or list(SHIFTS)
    for name in names:
        shift = SHIFTS[name]
        for level in args.levels:
            position = LEVELS.index(level)
            rates, _ = rate(partial(shifted, shift, position), args.windows)
            rows.append((f"{shift.group}: {name}", level, f"{shift.levels[position]:g}", rates))
            print(f"  {name} {level}: {rates}", file=sys.stderr, flush=True)
    motorcycles, bicycles = np.flatnonzero(test_labels == 1), np.flatnonzero(test_labels == 0)

    def label_shift() -> list[Upload]:
        # Every test motorcycle (each once) and a ninth as many bicycles: 90% motorcycles.
        chosen = np.concatenate([motorcycles, rng.choice(bicycles, len(motorcycles) // 9, False)])
        return as_png(test_images[chosen])

    specials = [
        ("label shift (90% motorcycles)", label_shift),
        ("OOD: noise textures", lambda: as_png(noise_textures(WINDOW, rng))),
        ("OOD: inverted colours", lambda: as_png((255 - clean_sample()).astype(np.uint8))),
    ]
    for name, make in specials:
        rows.append((name, "-", "-", rate(make, args.windows)[0]))
    print(
        f"\n{args.windows} windows of {WINDOW} per shift and severity, {args.clean_windows} "
        f"clean; alpha {args.alpha}; {time.monotonic() - started:.0f} s; monitor false "
        f"alarms {false_alarms} of {args.clean_windows} = {false_alarms / args.clean_windows:.1%}"
        f" (95% Clopper-Pearson {interval.low:.1%} to {interval.high:.1%})\n"
    )
    print(f"| shift | severity | parameter | {' | '.join(METHODS)} |")
    print("| --- | --- | --- |" + " --- |" * len(METHODS))
    for name, severity, parameter, rates in rows:
        print(
            f"| {name} | {severity} | {parameter} | "
            + " | ".join(f"{rates[m]:.0%}" for m in METHODS)
            + " |"
        )


def run_throughput(args: argparse.Namespace, model_dir: Path, bench: Bench) -> None:
    """`monitor report` over N captured records vs the capture reader alone."""
    from training_job.__main__ import main
    from training_job.monitor.captures import CaptureSource, ReadCounts, read_records

    test_images, _ = load_split("test")
    per_object = 1000
    lines = [
        capture.encode_lines(
            [
                capture.build_record(
                    input_body=encode(image),
                    input_content_type="image/png",
                    output_body=json.dumps([float(p) for p in row]).encode(),
                    output_content_type="application/json",
                    inference_time=START + timedelta(seconds=i),
                )
            ]
        )
        for i, (image, row) in enumerate(
            zip(
                test_images,
                bench.profile.predict(bench.net, bench.config, test_images),
                strict=True,
            )
        )
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "captures"
        for index in range(0, args.throughput, per_object):
            moment = START + timedelta(minutes=index // per_object)
            folder = root / f"{moment:%Y/%m/%d/%H}"
            folder.mkdir(parents=True, exist_ok=True)
            body = b"".join(lines[(index + k) % len(lines)] for k in range(per_object))
            (folder / f"{moment:%M-%S}-000-{index}.jsonl.gz").write_bytes(gzip.compress(body))
        load_before = os.getloadavg()[0]
        started, cpu_started = time.monotonic(), time.process_time()
        counts = ReadCounts()
        for _ in read_records(CaptureSource.parse(str(root)), counts):
            pass
        reader_s, reader_cpu = time.monotonic() - started, time.process_time() - cpu_started
        started, cpu_started = time.monotonic(), time.process_time()
        code = main(
            [
                "monitor",
                "report",
                "--captures",
                str(root),
                "--model-dir",
                str(model_dir),
                "--window",
                "200",
                "--embedding-sample",
                str(args.embedding_sample),
                "--embedding-members",
                str(args.embedding_members),
                "--threads",
                str(args.threads),
                "--out",
                str(Path(tmp) / "report"),
            ]
        )
        report_s, report_cpu = time.monotonic() - started, time.process_time() - cpu_started
        load_after = os.getloadavg()[0]
    # Other processes share the CPUs: CPU seconds and the ratio to the reader, measured in
    # the same run, say more than wall seconds alone.
    print(
        "\n| step | records | wall s | CPU s | records/s (wall) | wall s per 100,000 |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    for name, wall, cpu in (
        ("capture reader alone (reference)", reader_s, reader_cpu),
        (f"monitor report (exit {code})", report_s, report_cpu),
    ):
        print(
            f"| {name} | {counts.records} | {wall:.1f} | {cpu:.1f} | "
            f"{counts.records / wall:,.0f} | {wall * 100_000 / counts.records:.0f} |"
        )
    print(
        f"report / reader: {report_s / reader_s:.1f}x wall, {report_cpu / reader_cpu:.1f}x CPU; "
        f"load average {load_before:.1f} before, {load_after:.1f} after "
        f"({os.cpu_count()} CPUs)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir", type=Path, help="a trained model dir with its baseline (default: train one)"
    )
    parser.add_argument(
        "--rewrite-baseline",
        action="store_true",
        help="with --model-dir: use a copy of it whose baseline is written anew as training "
        "writes it now (for a model this script trained; the directory is left as it is)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=40,
        help="epochs when training the model here (default: %(default)s)",
    )
    parser.add_argument(
        "--windows",
        type=int,
        default=10,
        help="windows per shift and severity (default: %(default)s)",
    )
    parser.add_argument(
        "--clean-windows",
        type=int,
        default=200,
        help="clean windows, for the false-alarm rate (default: %(default)s)",
    )
    parser.add_argument(
        "--levels",
        nargs="+",
        default=list(LEVELS),
        choices=LEVELS,
        help="severities to run (default: all three)",
    )
    parser.add_argument(
        "--shifts",
        nargs="+",
        choices=list(SHIFTS),
        help="shifts to run (default: every one in training_job/monitor/shifts.py)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.01,
        help="family-wise alpha per window, every method (default: %(default)s)",
    )
    parser.add_argument(
        "--permutations", type=int, default=10_000, help="MMD permutations (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the window sampling")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default: %(default)s)"
    )
    parser.add_argument(
        "--throughput",
        type=int,
        default=0,
        metavar="N",
        help="instead: time `monitor report` over N generated records",
    )
    parser.add_argument(
        "--embedding-sample",
        type=int,
        default=96,
        help="images embedded per window, as the report's option (default: %(default)s)",
    )
    parser.add_argument(
        "--embedding-members",
        type=int,
        default=1,
        help="ensemble members that embed, as the report's option (default: %(default)s)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            print(f"training a model ({args.epochs} epochs)...", file=sys.stderr, flush=True)
            model_dir = train_model(args.epochs, Path(tmp) / "model")
        elif args.rewrite_baseline:
            model_dir = rewrite_baseline(model_dir, Path(tmp) / "model")
        bench = Bench(
            model_dir, args.alpha, args.permutations, args.embedding_sample, args.embedding_members
        )
        if args.throughput:
            run_throughput(args, model_dir, bench)
        else:
            run_detection(args, bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
