"""`python -m training_job monitor` against capture prefixes in the local AWS."""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import numpy as np
import pytest

from contract.manifest import LstEntry, format_lst
from tests.conftest import REPO_ROOT
from tests.training_job.monitor.conftest import (
    START,
    Vehicles,
    capture_line,
    capture_lines,
    model_archive,
    png,
)
from training_job.__main__ import build_parser, main
from training_job.monitor import cli
from training_job.monitor.captures import CaptureSource, ReadCounts, read_records
from training_job.monitor.shifts import SHIFTS

ENDPOINT_PREFIX = "data_capture/ep/AllTraffic/2026/11/24/09/"


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


def check(captures: str, *extra: str) -> int:
    return main(["monitor", "check", "--captures", captures, "--window", "100", *extra])


def warm_cast_lines(images: np.ndarray, answers: np.ndarray) -> list[bytes]:
    """Captures from a camera with another white balance (the benchmark's white_balance
    shift, high severity), recorded with the answers the model gave the original photos."""
    uploads = SHIFTS["white_balance"].uploads(images, 2, np.random.default_rng(0))
    return [
        capture_line(body, [float(p) for p in row], START + timedelta(seconds=i), kind)
        for i, ((body, kind), row) in enumerate(zip(uploads, answers, strict=True))
    ]


def test_check_says_which_kind_of_drift_with_its_exit_code(
    bucket: str, vehicles: Vehicles, predict, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = vehicles.test_images[:100]
    answers = predict(clean)
    captures = f"s3://{bucket}/data_capture/ep/"
    put_captures(bucket, {"00-00-000-a.jsonl": b"".join(capture_lines(clean, answers))})
    assert check(captures) == 0
    assert "verdict: no drift" in capsys.readouterr().out

    # The inputs change colour; the endpoint's recorded answers are those it gave before.
    put_captures(bucket, {"10-00-000-b.jsonl": b"".join(warm_cast_lines(clean, answers))})
    assert check(captures) == 3
    out = capsys.readouterr().out
    assert "verdict: input drift, model answers unchanged" in out
    assert "red_green" in out and "ALERT" in out

    # Clean inputs, but the model calls everything a motorcycle: its answers moved.
    motorcycle = np.tile([0.02, 0.98], (100, 1))
    put_captures(bucket, {"20-00-000-c.jsonl": b"".join(capture_lines(clean, motorcycle))})
    assert check(captures) == 1
    assert "verdict: model answers moved, inputs unchanged" in capsys.readouterr().out


def test_check_publishes_the_kind_of_drift_as_metrics(
    bucket: str, vehicles: Vehicles, predict
) -> None:
    clean = vehicles.test_images[:100]
    lines = warm_cast_lines(clean, predict(clean))
    put_captures(bucket, {"00-00-000-a.jsonl": b"".join(lines)})
    captures = f"s3://{bucket}/data_capture/ep/"
    namespace = f"Test/{bucket}"
    assert check(captures, "--metrics-namespace", namespace) == 3
    cloudwatch = boto3.client("cloudwatch")
    values = {}
    for name in ("InputDrift", "AnswerDrift", "UsableRecords"):
        statistics = cloudwatch.get_metric_statistics(
            Namespace=namespace,
            MetricName=name,
            Dimensions=[{"Name": "Captures", "Value": captures}],
            StartTime=datetime.now(UTC) - timedelta(hours=1),
            EndTime=datetime.now(UTC) + timedelta(hours=1),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        values[name] = statistics[0]["Maximum"]
    assert values == {"InputDrift": 1.0, "AnswerDrift": 0.0, "UsableRecords": 100.0}


def test_a_baseline_without_colour_moments_is_used_and_named(
    bucket: str,
    vehicles: Vehicles,
    predict,
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    older = tmp_path / "model"
    shutil.copytree(model_dir, older)
    document = json.loads((older / "baseline.json").read_text())
    for name in ("red_green", "yellow_blue", "red_green_contrast", "yellow_blue_contrast"):
        del document["input_statistics"][name]
    (older / "baseline.json").write_text(json.dumps(document))
    clean = vehicles.test_images[:100]
    put_captures(bucket, {"00-00-000-a.jsonl": b"".join(capture_lines(clean, predict(clean)))})
    assert check(f"s3://{bucket}/data_capture/ep/", "--model-dir", str(older)) == 0
    out = capsys.readouterr().out
    assert "note: the baseline has no red_green, yellow_blue" in out
    assert "monitor baseline --rebuild" in out
    assert " red_green " not in out  # not tested: nothing to compare with


def test_check_exit_2_when_nothing_can_be_judged(
    bucket: str, vehicles: Vehicles, predict, capsys: pytest.CaptureFixture[str]
) -> None:
    images = vehicles.test_images[:60]
    answers = predict(images)
    # An empty prefix (a typo in the cron job) must not read as "no drift".
    assert check(f"s3://{bucket}/data_capture/typo/") == 2
    assert "no verdict: 0 usable records of 0" in capsys.readouterr().err

    cases = {
        "garbage": b"".join(
            capture_line(b"plain text, not an image", [0.5, 0.5]) for _ in range(60)
        ),
        "other-model": b"".join(capture_line(png(image), [0.2, 0.3, 0.5]) for image in images),
        "too-few": b"".join(capture_lines(images[:10], answers[:10])),
    }
    for name, body in cases.items():
        s3 = boto3.client("s3")
        s3.put_object(Bucket=bucket, Key=f"data_capture/{name}/00-00-000-a.jsonl", Body=body)
        assert check(f"s3://{bucket}/data_capture/{name}/") == 2, name
        assert "error: no verdict" in capsys.readouterr().err, name

    # The other failures that leave no verdict.
    model = f"s3://{bucket}/models/job-1/output/model.tar.gz"
    assert check("s3://no-such-bucket-here/x/", "--model-data", model) == 2
    assert check(f"s3://{bucket}/data_capture/ep/", "--model-data", model + ".missing") == 2
    assert main(["monitor", "check", "--captures", "ftp://x/y"]) == 2
    assert "error:" in capsys.readouterr().err


def test_a_bug_exits_4_with_its_traceback_never_as_an_alert(
    bucket: str,
    vehicles: Vehicles,
    predict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = vehicles.test_images[:40]
    put_captures(bucket, {"00-00-000-a.jsonl": b"".join(capture_lines(images, predict(images)))})

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "last_records", broken)
    assert check(f"s3://{bucket}/data_capture/ep/") == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'a bug'" in err and "internal error" in err


def test_sigterm_removes_the_extracted_model(bucket: str, tmp_path: Path) -> None:
    """A check killed by cron's timeout leaves nothing in the temporary folder."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    # The check reads --labels after unpacking the model: a FIFO nobody writes to holds it
    # there until the signal comes.
    labels = tmp_path / "labels.csv"
    os.mkfifo(labels)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "training_job",
            "monitor",
            "check",
            "--captures",
            f"s3://{bucket}/data_capture/ep/",
            "--labels",
            str(labels),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "TMPDIR": str(temporary)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    writer = -1
    try:
        # The FIFO opens for writing only once the check opens it for reading: then the
        # model is unpacked and the check waits in the labels' read, where the signal comes.
        deadline = time.monotonic() + 120
        while writer < 0:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the check never read its labels"
            try:
                writer = os.open(labels, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(0.05)
        assert list(temporary.glob("monitor-*/*/model/model.*"))  # one folder per variant
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if writer >= 0:
            os.close(writer)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, err
    assert list(temporary.iterdir()) == []


def test_report_counts_each_kind_of_drift_and_exits_2_on_an_empty_prefix(
    bucket: str, vehicles: Vehicles, predict, tmp_path: Path
) -> None:
    clean = vehicles.test_images[:100]
    answers = predict(clean)
    lines = capture_lines(clean, answers) + warm_cast_lines(clean, answers)
    put_captures(bucket, {"00-00-000-a.jsonl": b"".join(lines)})
    out = tmp_path / "report"
    arguments = ["--window", "100", "--permutations", "2000", "--out", str(out)]
    captures = f"s3://{bucket}/data_capture/ep/"
    assert main(["monitor", "report", "--captures", captures, *arguments]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [w["drift"] for w in summary["window_results"]] == ["none", "input"]
    assert summary["window_results"][1]["verdict"] == "input drift, model answers unchanged"
    assert (summary["input_drift_windows"], summary["answer_drift_windows"]) == (1, 0)
    assert "input drift, model answers unchanged" in (out / "report.html").read_text()

    empty = tmp_path / "empty"
    typo = f"s3://{bucket}/data_capture/typo/"
    assert main(["monitor", "report", "--captures", typo, "--out", str(empty)]) == 2
    assert json.loads((empty / "summary.json").read_text())["windows"] == 0


def test_baseline_publishes_packaged_or_rebuilds_from_the_train_split(
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
        lst.append(LstEntry(row, int(vehicles.train_labels[row]), name))
    s3.put_object(Bucket=bucket, Key="train.lst", Body=format_lst(lst).encode())
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
    assert rebuilt["format_version"] == 3
    assert rebuilt["count"] == 10  # answers: a quarter of the 40 staged images
    # Input statistics and upload sizes, as train.py writes them: all 40 staged images.
    assert rebuilt["input_count"] == 40
    assert len(rebuilt["input_statistics"]["red_blue"]) == 40
    assert sorted(rebuilt["upload_bytes"]) == sorted(
        len(png(image)) for image in vehicles.train_images[:40]
    )
    assert rebuilt["content_types"] == {"image/png": 40}
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
        ["--metrics-namespace", "AWS/SageMaker"],
        ["--metrics-namespace", ""],
        ["--metrics-namespace", "x" * 256],
    ],
)
def test_malformed_arguments_are_refused_by_the_parser(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", "check", "--captures", "s3://b/p/", *arguments])
    assert exit_info.value.code == 2


def test_the_data_prefix_follows_the_prefix_rule_stage_wrote_it_by() -> None:
    # It was used as given: `--data-prefix cifar` read s3://BUCKET/cifartrain.lst.
    parser = build_parser()
    args = parser.parse_args(
        ["monitor", "baseline", "--bucket", "bucket-a", "--data-prefix", "cifar"]
    )
    assert args.data_prefix == "cifar/"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["monitor", "baseline", "--bucket", "bucket-a", "--data-prefix", "/abs"])
    assert exit_info.value.code == 2


def test_check_refuses_captures_in_another_region_instead_of_judging_them(
    local_aws: dict[str, str], unique_name: str, model_dir: Path, vehicles: Vehicles, predict,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Issue 24 item 9: `--region` says "the bucket must be in it" on every command, but
    `monitor check --region <other>` gave a verdict on a bucket elsewhere. README: every
    step runs in one region, and S3 sends events to EventBridge only in the bucket's."""
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(
        Bucket=unique_name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    s3.put_object(
        Bucket=unique_name, Key="models/job-1/output/model.tar.gz", Body=model_archive(model_dir)
    )
    clean = vehicles.test_images[:100]
    lines = b"".join(capture_lines(clean, predict(clean)))
    s3.put_object(Bucket=unique_name, Key=ENDPOINT_PREFIX + "00-00-000-a.jsonl", Body=lines)
    captures = f"s3://{unique_name}/data_capture/ep/"
    assert check(captures, "--region", "us-east-1") == 2
    captured = capsys.readouterr()
    assert f"bucket {unique_name} is in eu-west-1, but this command runs in us-east-1" in (
        captured.err
    )
    assert "verdict" not in captured.out
    assert check(captures, "--region", "eu-west-1") == 0  # in its own region, judged


def test_versions_names_a_missing_bucket_without_a_traceback(
    local_aws: dict[str, str], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["monitor", "versions", "--bucket", f"{unique_name}-missing", "--endpoint-name",
            "ep", "--production", "v1", "--shadow", "v2", "--region", "us-east-1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"bucket {unique_name}-missing does not exist" in err
    assert "Traceback" not in err and err.count("\n") == 1
