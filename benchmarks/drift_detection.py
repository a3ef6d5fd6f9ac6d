"""Drift detection: detection rate per shift and severity, false alarms on clean traffic.

Trains the classifier with train.py's own `fit` (or loads --model-dir), writes its
baseline from the validation split with profile.write_baseline, then builds windows of
captured traffic in-process: each request is encoded (PNG, or JPEG for the JPEG shift),
decoded as the endpoint decodes it, classified by the model, turned into a capture record
by training_job/capture.py and parsed back by the monitor's reader. Clean windows resample
the test images; shifted ones corrupt them (CIFAR-10-C style severities 1-5), shift the
labels (90% motorcycles) or replace them with synthetic out-of-distribution images (the
shared archive holds no other CIFAR classes): smoothed noise textures and colour-inverted
photos.

Three methods judge every window at the same family-wise alpha:
  monitor     this monitor (every detector, Holm-corrected)
  mmd         the monitor's embedding test alone (its alert inside the Holm family)
  confidence  the reference's method: confidence alone (more low-confidence answers than
              the baseline, the conditional binomial test)
  bbsd        black-box shift detection (Rabanser et al., "Failing Loudly", 2019): a KS
              test per softmax output, Bonferroni-corrected

    .venv/bin/python benchmarks/drift_detection.py [--windows 20] [--clean-windows 100]
    .venv/bin/python benchmarks/drift_detection.py --throughput 100000   # report timing
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import pickle
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training_job import capture  # noqa: E402
from training_job.monitor import model_code  # noqa: E402
from training_job.monitor.baseline import Baseline  # noqa: E402
from training_job.monitor.captures import parse_record  # noqa: E402
from training_job.monitor.detectors import DriftMonitor, LowConfidenceDetector, holm  # noqa: E402
from training_job.monitor.embedding import Embedder  # noqa: E402
from training_job.monitor.report import WindowAnalyzer  # noqa: E402

ARCHIVE = REPO.parent / "shared" / "data" / "cifar-100-python-vehicles.tar.gz"
WINDOW = 200
START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def load_split(name: str) -> tuple[np.ndarray, np.ndarray]:
    with tarfile.open(ARCHIVE) as archive:
        member = archive.extractfile(f"cifar-100-python/{name}")
        assert member is not None
        batch = pickle.load(member, encoding="bytes")
    images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.array([0 if y == 8 else 1 for y in batch[b"fine_labels"]])
    return np.ascontiguousarray(images), labels


def encode(image: np.ndarray, image_format: str = "PNG", quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format, quality=quality)
    return buffer.getvalue()


def train_model(epochs: int, out: Path) -> Path:
    train = model_code.train()
    images, labels = load_split("train")
    split = train.Split(images, labels, [len(encode(i)) for i in images])
    hp = train.Hyperparameters.from_args(train.build_parser().parse_args(["--epochs", str(epochs)]))
    train_idx, val_idx = train.stratified_split(split.labels, hp.val_fraction, hp.seed)
    net, config, _ = train.fit(
        hp,
        train.subset(split, train_idx),
        train.subset(split, val_idx),
        torch.device("cpu"),
        lambda line: None,
    )
    net.eval()
    model_code.model().save_model(net, config, out)
    val = train.subset(split, val_idx)
    model_code.profile().write_baseline(out, net, config, val.images, val.byte_sizes)
    return out


# Severities 1-5 follow CIFAR-10-C (Hendrycks & Dietterich, 2019) where it is simple.
def gaussian_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1] * 255
    return np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)


def defocus_blur(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # A Gaussian stands in for CIFAR-C's disk kernel (PIL has no disk filter).
    radius = [0.5, 0.75, 1.0, 1.5, 2.0][severity - 1]
    return np.stack(
        [np.asarray(Image.fromarray(i).filter(ImageFilter.GaussianBlur(radius))) for i in images]
    )


def brightness(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    shift = [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1] * 255
    return np.clip(images.astype(np.float32) + shift, 0, 255).astype(np.uint8)


def contrast(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    factor = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    means = images.astype(np.float32).mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((images - means) * factor + means, 0, 255).astype(np.uint8)


JPEG_QUALITY = [80, 65, 58, 50, 40]

SHIFTS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray] | None] = {
    "gaussian_noise": gaussian_noise,
    "defocus_blur": defocus_blur,
    "brightness": brightness,
    "contrast": contrast,
    "jpeg": None,  # the upload itself changes format and quality
}


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

    def records(self, images: np.ndarray, image_format: str = "PNG", quality: int = 95) -> list:
        bodies = [encode(i, image_format, quality) for i in images]
        decoded = np.stack([self.imaging.decode(b) for b in bodies])
        probabilities = self.profile.predict(self.net, self.config, decoded)
        content_type = "image/png" if image_format == "PNG" else "image/jpeg"
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
            for i, (body, row) in enumerate(zip(bodies, probabilities, strict=True))
        ]
        return [parse_record(line) for line in lines]

    def judge(self, records: list) -> dict[str, bool]:
        result = self.analyzer.analyze(0, records, len(records))
        mmd = any(f.alert for f in result.findings if f.test == "mmd")
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
            "mmd": mmd,
            "confidence": low.alert,
            "bbsd": bool(bbsd),
        }


def run_detection(args: argparse.Namespace, bench: Bench) -> None:
    test_images, test_labels = load_split("test")
    rng = np.random.default_rng(args.seed)
    methods = ("monitor", "mmd", "confidence", "bbsd")

    def rate(make: Callable[[], list], windows: int) -> dict[str, float]:
        hits = dict.fromkeys(methods, 0)
        for _ in range(windows):
            for method, alert in bench.judge(make()).items():
                hits[method] += alert
        return {m: hits[m] / windows for m in methods}

    def clean_sample() -> np.ndarray:
        return test_images[rng.integers(0, len(test_images), WINDOW)]

    rows: list[tuple[str, str, dict[str, float]]] = []
    started = time.monotonic()
    rows.append(
        (
            "clean (false alarms)",
            "-",
            rate(lambda: bench.records(clean_sample()), args.clean_windows),
        )
    )

    def shifted(name: str, severity: int) -> Callable[[], list]:
        corrupt = SHIFTS[name]
        if corrupt is None:
            quality = JPEG_QUALITY[severity - 1]
            return lambda: bench.records(clean_sample(), "JPEG", quality)
        return lambda: bench.records(corrupt(clean_sample(), severity, rng))

    for name in SHIFTS:
        for severity in args.severities:
            make = shifted(name, severity)
            rows.append((name, str(severity), rate(make, args.windows)))
            print(f"  {name} {severity}: {rows[-1][2]}", file=sys.stderr, flush=True)
    motorcycles, bicycles = np.flatnonzero(test_labels == 1), np.flatnonzero(test_labels == 0)

    def label_shift() -> list:
        count = int(WINDOW * 0.9)
        chosen = np.concatenate(
            [rng.choice(motorcycles, count), rng.choice(bicycles, WINDOW - count)]
        )
        return bench.records(test_images[chosen])

    rows.append(("label shift (90% motorcycles)", "-", rate(label_shift, args.windows)))
    rows.append(
        (
            "OOD: noise textures",
            "-",
            rate(lambda: bench.records(noise_textures(WINDOW, rng)), args.windows),
        )
    )
    rows.append(
        (
            "OOD: inverted colours",
            "-",
            rate(lambda: bench.records((255 - clean_sample()).astype(np.uint8)), args.windows),
        )
    )
    print(
        f"\n{args.windows} windows of {WINDOW} per shift, {args.clean_windows} clean; "
        f"alpha {args.alpha}; {time.monotonic() - started:.0f} s\n"
    )
    print(f"| shift | severity | {' | '.join(methods)} |")
    print("| --- | --- |" + " --- |" * len(methods))
    for name, severity, rates in rows:
        print(f"| {name} | {severity} | " + " | ".join(f"{rates[m]:.0%}" for m in methods) + " |")


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
        "--epochs",
        type=int,
        default=40,
        help="epochs when training the model here (default: %(default)s)",
    )
    parser.add_argument(
        "--windows",
        type=int,
        default=20,
        help="windows per shift and severity (default: %(default)s)",
    )
    parser.add_argument(
        "--clean-windows",
        type=int,
        default=100,
        help="clean windows, for the false-alarm rate (default: %(default)s)",
    )
    parser.add_argument(
        "--severities",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5],
        choices=[1, 2, 3, 4, 5],
        help="severities to run (default: all)",
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
