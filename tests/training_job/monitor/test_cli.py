"""`python -m training_job monitor` against capture prefixes in the local AWS."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import boto3
import numpy as np
import pytest

from tests.training_job.monitor.conftest import START, Vehicles, capture_line, capture_lines, png
from training_job.__main__ import main
from training_job.monitor.captures import CaptureSource, ReadCounts, read_records

ENDPOINT_PREFIX = "data_capture/ep/AllTraffic/2026/11/24/09/"


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


@pytest.fixture
def bucket(local_aws: dict[str, str], unique_name: str, model_dir: Path) -> str:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=unique_name)
    s3.put_object(
        Bucket=unique_name, Key="models/job-1/output/model.tar.gz", Body=model_archive(model_dir)
    )
    return unique_name


def put_captures(bucket: str, objects: dict[str, bytes]) -> None:
    s3 = boto3.client("s3")
    for name, body in objects.items():
        s3.put_object(Bucket=bucket, Key=ENDPOINT_PREFIX + name, Body=body)


def messy_objects(vehicles: Vehicles, predict) -> dict[str, bytes]:
    images = vehicles.test_images[:60]
    lines = capture_lines(images, predict(images))
    gzipped = gzip.compress(b"".join(lines[40:]))
    return {
        "00-00-000-a.jsonl": b"".join(lines[:20])
        + b"\n"
        + b"{not json}\n"
        + b'{"captureData": {}, "eventVersion": "0"}\n',
        "10-00-000-b.jsonl": b"".join(lines[20:40])
        + capture_line(b"plain text, not an image", [0.5, 0.5])
        + capture_line(png(images[0]), [0.2, 0.3, 0.5])  # another model version
        + capture_line(png(images[0]), [0.5, "x"])  # type: ignore[list-item]
        + lines[0][:50],  # the object being written when the endpoint stopped
        "20-00-000-c.jsonl.gz": gzipped,
        "30-00-000-d.jsonl.gz": gzipped[: len(gzipped) // 3],  # a gzip object cut short
    }


def test_reader_counts_every_kind_of_damage(bucket: str, vehicles: Vehicles, predict) -> None:
    put_captures(bucket, messy_objects(vehicles, predict))
    counts = ReadCounts()
    records = list(read_records(CaptureSource.parse(f"s3://{bucket}/data_capture/ep/"), counts))
    assert counts.objects == 4
    assert counts.blank_lines == 1
    assert counts.corrupt_lines == 1
    assert counts.invalid_records == 1
    assert counts.bad_output == 1
    assert counts.truncated_lines == 1
    assert counts.unreadable_objects == 1
    assert 62 <= len(records) <= 62 + 20  # the cut gzip object yields what it held intact
    assert records[0].content_type == "image/png" and records[0].time == START


def test_report_writes_a_self_contained_page_plots_and_summary(
    bucket: str,
    vehicles: Vehicles,
    predict,
    tmp_path: Path,
) -> None:
    put_captures(bucket, messy_objects(vehicles, predict))
    out = tmp_path / "report"
    code = main(
        [
            "monitor",
            "report",
            "--captures",
            f"s3://{bucket}/data_capture/ep/",
            "--window",
            "30",
            "--out",
            str(out),
            "--permutations",
            "500",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == f"s3://{bucket}/models/job-1/output/model.tar.gz"
    assert summary["damage"]["not_image"] == 1
    assert summary["damage"]["other_model"] == 1
    assert summary["damage"]["truncated_lines"] == 1
    assert summary["windows"] == len(summary["window_results"]) >= 2
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 12
    assert "http://" not in page and "https://" not in page
    for name in (
        "volume",
        "class_mix",
        "confidence_histogram",
        "confidence_over_time",
        "low_confidence_rate",
        "input_brightness",
        "input_upload_bytes",
        "p_values",
    ):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_report_by_time_with_labels_measures_performance(
    bucket: str,
    vehicles: Vehicles,
    predict,
    tmp_path: Path,
) -> None:
    images = vehicles.test_images[:40]
    lines = capture_lines(images, predict(images), step_s=90)  # 40 records over an hour
    put_captures(bucket, {"00-00-000-a.jsonl": b"".join(lines)})
    event_ids = [json.loads(line)["eventMetadata"]["eventId"] for line in lines]
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "eventId,label\n"
        + "".join(
            f"{e},{['bicycle', 'motorcycle'][y]}\n"
            for e, y in zip(event_ids, vehicles.test_labels[:40], strict=True)
        )
    )
    out = tmp_path / "report"
    assert (
        main(
            [
                "monitor",
                "report",
                "--captures",
                f"s3://{bucket}/data_capture/ep/",
                "--every",
                "30m",
                "--labels",
                str(labels),
                "--out",
                str(out),
                "--since",
                "2026-11-24T09:00:00Z",
                "--until",
                "2026-11-24T10:00:00Z",
            ]
        )
        == 0
    )
    windows = json.loads((out / "summary.json").read_text())["window_results"]
    assert [w["records"] for w in windows] == [20, 20]
    assert all(w["performance"]["labelled"] == 20 for w in windows)
    assert all(0.0 <= w["performance"]["accuracy"] <= 1.0 for w in windows)


def test_check_exit_codes(
    bucket: str,
    vehicles: Vehicles,
    predict,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    captures = f"s3://{bucket}/data_capture/ep/"
    clean = vehicles.test_images[:100]
    put_captures(bucket, {"00-00-000-a.jsonl": b"".join(capture_lines(clean, predict(clean)))})
    assert main(["monitor", "check", "--captures", captures, "--window", "100"]) == 0
    assert "ok" in capsys.readouterr().out

    noise = np.random.default_rng(0).normal(0, 25, (100, 32, 32, 3))  # a failing camera
    shifted = np.clip(vehicles.test_images[100:200] + noise, 0, 255).astype(np.uint8)
    put_captures(bucket, {"50-00-000-b.jsonl": b"".join(capture_lines(shifted, predict(shifted)))})
    assert (
        main(
            [
                "monitor",
                "check",
                "--captures",
                captures,
                "--window",
                "100",
                "--model-dir",
                str(model_dir),
            ]
        )
        == 1
    )
    assert "ALERT" in capsys.readouterr().out

    assert (
        main(
            [
                "monitor",
                "check",
                "--captures",
                "s3://no-such-bucket-here/x/",
                "--model-dir",
                str(model_dir),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "monitor",
                "check",
                "--captures",
                captures,
                "--model-data",
                f"s3://{bucket}/models/none/output/model.tar.gz",
            ]
        )
        == 2
    )
    assert main(["monitor", "check", "--captures", "ftp://x/y"]) == 2
    assert "error:" in capsys.readouterr().err


def test_empty_prefix_gives_no_verdict_not_a_crash(bucket: str, tmp_path: Path) -> None:
    captures = f"s3://{bucket}/data_capture/empty/"
    assert main(["monitor", "check", "--captures", captures]) == 0
    assert main(["monitor", "report", "--captures", captures, "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["windows"] == 0


def test_baseline_publishes_packaged_or_rebuilds_from_the_validation_split(
    bucket: str, model_dir: Path, vehicles: Vehicles
) -> None:
    s3 = boto3.client("s3")
    assert main(["monitor", "baseline", "--bucket", bucket]) == 0
    beside = json.loads(
        s3.get_object(Bucket=bucket, Key="models/job-1/output/baseline.json")["Body"].read()
    )
    assert beside["count"] == 200

    # A model trained without a profile: rebuilt from the train split, cut as train.py does.
    lst = []
    for row in range(40):
        name = f"img-{row}.png"
        s3.put_object(Bucket=bucket, Key=f"train/{name}", Body=png(vehicles.train_images[row]))
        lst.append(f"{row}\t{vehicles.train_labels[row]}\t{name}\n")
    s3.put_object(Bucket=bucket, Key="train.lst", Body="".join(lst).encode())
    metrics = {
        "hyperparameters": {"val_fraction": 0.25, "seed": 3, "classes": ["bicycle", "motorcycle"]}
    }
    s3.put_object(
        Bucket=bucket,
        Key="models/job-2/output/model.tar.gz",
        Body=model_archive(model_dir, with_baseline=False, metrics=metrics),
    )
    url = f"s3://{bucket}/models/job-2/output/model.tar.gz"
    assert main(["monitor", "baseline", "--model-data", url]) == 0
    rebuilt = json.loads(
        s3.get_object(Bucket=bucket, Key="models/job-2/output/baseline.json")["Body"].read()
    )
    assert rebuilt["count"] == 10  # a quarter of the 40 staged images
    assert main(["monitor", "baseline", "--model-data", f"s3://{bucket}/nothing.tar.gz"]) == 2


@pytest.mark.parametrize("command", [[], ["baseline"], ["report"], ["check"]])
def test_help_explains_every_option(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", *command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage:" in text
    if command in (["report"], ["check"]):
        for option in ("--captures", "--since", "--until", "--model-data", "--labels", "--alpha"):
            assert option in text


@pytest.mark.parametrize(
    "arguments",
    [
        ["--window", "0"],
        ["--window", "abc"],
        ["--alpha", "2"],
        ["--since", "yesterday"],
    ],
)
def test_malformed_arguments_are_refused_by_the_parser(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", "check", "--captures", "s3://b/p/", *arguments])
    assert exit_info.value.code == 2
