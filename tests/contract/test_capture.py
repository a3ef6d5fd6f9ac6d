"""The one capture-record reader: every kind of damage counted, hostile objects bounded."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from datetime import UTC, datetime

import pytest

from contract import capture
from training_job.serving.capture import build_record, encode_lines


def good_lines(count: int, output: bytes = b"[0.9, 0.1]") -> bytes:
    return encode_lines(
        [
            build_record(
                input_body=b"\x89PNG bytes",
                input_content_type="image/png",
                output_body=output,
                output_content_type="application/json",
                inference_time=datetime(2026, 11, 24, 9, tzinfo=UTC),
            )
            for _ in range(count)
        ]
    )


def read(body: bytes, **limits: int) -> tuple[int, dict[str, int]]:
    counts: dict[str, int] = {}
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    return len(list(capture.read_object(chunks, counts, **limits))), counts


def compressed_stream(piece: bytes, repeats: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(piece) for _ in range(repeats)]
    return b"".join([*parts, compressor.flush()])


def test_each_kind_of_damaged_line_is_counted_by_its_kind() -> None:
    body = (
        good_lines(2)
        + b"\n"
        + b"{not json\n"
        + b"[" * 100_000  # deep enough to exhaust the parser's recursion
        + b"\n"
        + b'{"captureData": {}, "eventVersion": "0"}\n'
        + good_lines(1, b'{"p": 1}')
        + b"\xff\xfe\n"
        + good_lines(1)[:60]  # the last line, cut short
    )
    records, counts = read(body)
    assert records == 2
    assert counts == {
        "lines": 9,
        "blank": 1,
        "corrupt": 3,
        "invalid": 1,
        "bad_output": 1,
        "truncated": 1,
    }
    assert capture.damaged(counts) == 6


def test_a_line_over_the_cap_is_skipped_as_it_streams_past() -> None:
    body = good_lines(1) + b"x" * 50_000 + b"\n" + good_lines(1)
    assert read(body, max_line=10_000) == (2, {"lines": 3, "oversized": 1})


def test_concatenated_gzip_members_are_read_and_a_cut_one_keeps_what_it_held() -> None:
    assert read(gzip.compress(good_lines(2)) + gzip.compress(good_lines(3)))[0] == 5
    whole = gzip.compress(good_lines(50))
    counts: dict[str, int] = {}
    records = []
    with pytest.raises(capture.CaptureObjectError, match="cut short"):
        for record in capture.read_object([whole[: len(whole) // 2]], counts):
            records.append(record)
    assert 0 < len(records) < 50
    with pytest.raises(capture.CaptureObjectError, match="gzip"):
        list(capture.read_object([b"\x1f\x8b not gzip at all"], {}))


def test_a_gzip_bomb_stops_at_the_object_cap_in_bounded_memory() -> None:
    bomb = compressed_stream(bytes(1024 * 1024), 1024)  # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 1_100_000
    tracemalloc.start()
    try:
        with pytest.raises(capture.CaptureObjectError, match="unpacks to over"):
            list(capture.read_object([bomb], {}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A line's worth (MAX_LINE_BYTES) and a few chunks; the whole would be 1 GiB.
    assert peak < 32 * 1024 * 1024


def test_a_bomb_of_newlines_stops_at_the_line_cap() -> None:
    bomb = compressed_stream(b"\n" * 1024 * 1024, 60)  # 60 million blank lines
    counts: dict[str, int] = {}
    with pytest.raises(capture.CaptureObjectError, match="lines"):
        list(capture.read_object([bomb], counts))
    assert counts["lines"] == capture.MAX_OBJECT_LINES


def test_the_strict_parser_names_what_is_wrong() -> None:
    record = json.loads(good_lines(1))
    record["captureData"]["endpointInput"]["encoding"] = "ROT13" * 1000
    with pytest.raises(capture.CaptureFormatError, match="unknown encoding") as error:
        capture.parse_line(json.dumps(record))
    assert error.value.kind == "invalid" and len(str(error.value)) < 200


def test_the_capture_of_the_largest_body_the_endpoint_accepts_is_read_as_a_record() -> None:
    """Issue 24, item 2: the endpoint accepts a body up to InvokeEndpoint's limit (6 MB:
    6,291,456 bytes, botocore's BodyBlob `max`; the SageMaker Runtime answers a larger one
    413), whose capture line is 8.4 MB; the readers' line cap was 8 MiB, so every monitor
    counted it `oversized`. The cap follows from that largest body."""
    from local_aws.endpoint.config import DEFAULT_MAX_BODY_BYTES

    body = b"\xff\xd8\xff" + bytes(range(256)) * (DEFAULT_MAX_BODY_BYTES // 256)
    line = encode_lines(
        [
            build_record(
                input_body=body[:DEFAULT_MAX_BODY_BYTES],
                input_content_type="image/jpeg",
                output_body=b"[0.9, 0.1]",
                output_content_type="application/json",
                inference_time=datetime(2026, 11, 24, 9, tzinfo=UTC),
            )
        ]
    )
    assert read(line) == (1, {"lines": 1})
