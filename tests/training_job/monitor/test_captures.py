"""The capture reader on SageMaker's documented record layout and on hostile input."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from pathlib import Path

import pytest

from training_job.monitor import captures
from training_job.monitor.captures import CaptureSource, ReadCounts, read_labels, read_records

# The layout of AWS's documented capture record (Model Monitor, "Capture data"), with an
# output SageMaker stored base64-encoded because its content type was not declared JSON.
DOCUMENTED = {
    "captureData": {
        "endpointInput": {
            "observedContentType": "image/jpeg",
            "mode": "INPUT",
            "data": base64.b64encode(b"\xff\xd8 jpeg bytes").decode(),
            "encoding": "BASE64",
        },
        "endpointOutput": {
            "observedContentType": "application/json; charset=utf-8",
            "mode": "OUTPUT",
            "data": base64.b64encode(b"[0.25, 0.75]").decode(),
            "encoding": "BASE64",
        },
    },
    "eventMetadata": {
        "eventId": "a5e4b1d0-4a1b-4c6e-9a3c-111111111111",
        "inferenceTime": "2026-11-24T09:00:00Z",
    },
    "eventVersion": "0",
}


def test_documented_record_layout_is_read() -> None:
    record = captures.parse_record(json.dumps(DOCUMENTED))
    assert record.probabilities == (0.25, 0.75)
    assert record.content_type == "image/jpeg"
    assert record.body == b"\xff\xd8 jpeg bytes"
    assert record.inference_id is None
    assert record.event_id == "a5e4b1d0-4a1b-4c6e-9a3c-111111111111"


@pytest.mark.parametrize("output", ['{"p": 1}', "[]", "[true, false]", "[1.5, -0.5]", "[0.5,"])
def test_outputs_that_are_not_probabilities_are_refused(output: str) -> None:
    document = json.loads(json.dumps(DOCUMENTED))
    document["captureData"]["endpointOutput"].update(data=output, encoding="JSON")
    with pytest.raises(captures.RecordError) as error:
        captures.parse_record(json.dumps(document))
    assert error.value.kind == "bad_output"


def test_local_folder_with_oversized_empty_and_gzip_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(captures, "MAX_LINE_BYTES", 4096)
    line = json.dumps(DOCUMENTED).encode() + b"\n"
    hour = tmp_path / "ep" / "AllTraffic" / "2026" / "11" / "24" / "09"
    hour.mkdir(parents=True)
    (hour / "00-00-000-a.jsonl").write_bytes(line + b"x" * 10_000 + b"\n" + line)
    (hour / "01-00-000-b.jsonl").write_bytes(b"")
    (hour / "02-00-000-c.jsonl.gz").write_bytes(gzip.compress(line * 3))
    (hour / "notes.txt").write_text("not a capture object")
    counts = ReadCounts()
    records = list(read_records(CaptureSource.parse(str(tmp_path)), counts))
    assert len(records) == 5
    assert counts.oversized_lines == 1
    assert counts.objects == 3


def test_time_range_prunes_hours_and_records(tmp_path: Path) -> None:
    line = json.dumps(DOCUMENTED).encode() + b"\n"
    for hour in ("08", "09", "10"):
        folder = tmp_path / "2026" / "11" / "24" / hour
        folder.mkdir(parents=True)
        (folder / "00-00-000-a.jsonl").write_bytes(line)
    counts = ReadCounts()
    since = captures.parse_time("2026-11-24T09:00:00Z")
    until = captures.parse_time("2026-11-24T09:00:00.5Z")
    assert len(list(read_records(CaptureSource.parse(str(tmp_path)), counts, since, until))) == 1
    assert counts.objects == 1  # the 08 and 10 folders were never opened


def test_bad_sources_are_named_errors(tmp_path: Path) -> None:
    for location in ("ftp://x/y", "s3://", str(tmp_path / "missing")):
        with pytest.raises(captures.CaptureSourceError):
            CaptureSource.parse(location)


def test_labels_from_csv_and_ground_truth_json_lines(tmp_path: Path) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("inferenceId,label\nid-1,bicycle\nid-2,1\n,ignored\n")
    assert read_labels(csv_file) == {"id-1": "bicycle", "id-2": "1"}
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "groundTruthData": {"data": "motorcycle", "encoding": "CSV"},
                "eventMetadata": {"eventId": "e-1"},
                "eventVersion": "0",
            }
        )
        + "\n"
    )
    assert read_labels(jsonl) == {"e-1": "motorcycle"}
    bad = tmp_path / "bad.csv"
    bad.write_text("id,truth\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        read_labels(bad)
    bad.write_text('{"groundTruthData": 3}\n')
    with pytest.raises(ValueError, match="ground-truth"):
        read_labels(bad)


def test_hostile_objects_are_counted_and_the_reader_goes_on(tmp_path: Path) -> None:
    line = json.dumps(DOCUMENTED).encode() + b"\n"
    hour = tmp_path / "ep" / "AllTraffic" / "2026" / "11" / "24" / "09"
    hour.mkdir(parents=True)
    (hour / "00-00-000-a.jsonl").write_bytes(line + b"[" * 100_000 + b"\n" + line)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    bomb = b"".join([*(compressor.compress(zeros) for _ in range(256)), compressor.flush()])
    (hour / "01-00-000-b.jsonl.gz").write_bytes(bomb)  # 256 MiB unpacked
    (hour / "02-00-000-c.jsonl").write_bytes(line)
    counts = ReadCounts()
    records = list(read_records(CaptureSource.parse(str(tmp_path)), counts))
    assert len(records) == 3
    assert (counts.objects, counts.corrupt_lines, counts.unreadable_objects) == (3, 1, 1)
    assert "unpacks to over" in counts.errors[0]
