"""contract.baseline: the one reading of baseline.json, shared by both monitors.

The writer's own output is read in tests/training_job/code/test_baseline_profile.py; here
the reader's rules, on the smallest documents that show them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract.baseline import READABLE_VERSIONS, BaselineFormatError, loads, parse
from contract.threshold import DEFAULT_THRESHOLD
from tests.contract.baseline_documents import document


@pytest.mark.parametrize("version", READABLE_VERSIONS)
def test_every_readable_version_is_read(version: int) -> None:
    parsed = parse(document(version), "test")
    assert (parsed.format_version, parsed.count, parsed.input_count) == (version, 3, 3)
    assert parsed.classes == ["bicycle", "motorcycle"]
    assert parsed.threshold == 0.9
    assert parsed.class_share == {"bicycle": 2 / 3, "motorcycle": 1 / 3}
    assert parsed.upload_bytes == [100, 200, 300]


def test_version_3_input_statistics_cover_input_count_images() -> None:
    statistics = {"brightness": [0.1, 0.2, 0.3, 0.4, 0.5], "red_blue": [0.0] * 5}
    parsed = parse(
        document(3, input_count=5, input_statistics=statistics, upload_bytes=[1, 2, 3, 4, 5]),
        "test",
    )
    assert (parsed.count, parsed.input_count) == (3, 5)
    assert parsed.input_statistics == statistics


def test_a_missing_threshold_is_the_workflow_default() -> None:
    assert parse(document(confidence_threshold=...), "test").threshold == DEFAULT_THRESHOLD


def test_unknown_counts_of_bytes_and_types_may_be_null() -> None:
    parsed = parse(document(upload_bytes=None, content_types=None), "test")
    assert (parsed.upload_bytes, parsed.content_types) == (None, None)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"format_version": 4}, "format_version 4 is not one of [1, 2, 3]"),
        ({"format_version": ...}, "no format_version"),
        ({"format_version": True}, "format_version True"),
        ({"classes": []}, "classes must be a list of distinct"),
        ({"classes": ["bicycle", "bicycle"]}, "classes must be a list of distinct"),
        ({"confidence_threshold": 1.5}, "confidence_threshold must be in (0, 1]"),
        ({"confidence_threshold": "high"}, "must hold finite numbers, got 'high'"),
        ({"probabilities": [[1.0, 0.0]]}, "probabilities must hold at least 2 rows"),
        ({"probabilities": [[0.5, 0.5]] * 2 + [[1.0]]}, "each probabilities row must be a list"),
        ({"count": 4}, "count is 4, probabilities 3"),
        ({"confidences": [0.9, 0.6]}, "confidences must be a list of 3 numbers"),
        ({"confidences": [0.9, 0.6, float("nan")]}, "must hold finite numbers, got nan"),
        ({"confidences": [0.9, 0.6, 1.8]}, "confidences must be in [0, 1]"),
        ({"class_counts": {"bicycle": 3, "car": 0}}, "names classes not in classes"),
        ({"class_counts": {"bicycle": 2, "motorcycle": 2}}, "class_counts sum to 4, not 3"),
        ({"class_counts": {"bicycle": 4, "motorcycle": -1}}, "whole number >= 0, got -1"),
        ({"input_statistics": {"brightness": [0.1]}}, "every input statistic needs 3 values"),
        (
            {"input_statistics": {"brightness": [0.1, 0.2, None]}},
            "must hold finite numbers, got None",
        ),
        ({"input_statistics": [0.1, 0.2, 0.3]}, "input_statistics must be an object"),
        ({"input_count": 1}, "input_count must be at least 2"),
        ({"input_count": 4}, "every input statistic needs 4 values, 'brightness' does not"),
        ({"input_count": "many"}, "input_count is not a number: 'many'"),
        ({"upload_bytes": [1, 2]}, "upload_bytes has 2 values, not input_count 3"),
        ({"upload_bytes": [1, 2, 2.5]}, "whole number >= 0, got 2.5"),
        ({"content_types": ["image/png"]}, "content_types must be an object"),
    ],
)
def test_a_damaged_document_is_refused_naming_the_field(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(BaselineFormatError) as raised:
        parse(document(**changes), "s3://bucket/baseline.json")
    assert str(raised.value).startswith("s3://bucket/baseline.json: not a baseline document: ")
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),  # nested past the parser's recursion limit
        (b"[1, 2]", "the document must be an object"),
        (b"null", "the document must be an object"),
    ],
)
def test_bytes_that_are_not_a_document_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(BaselineFormatError, match="not a baseline document") as raised:
        loads(data, "test")
    assert reason in str(raised.value)


def test_loads_reads_what_json_dumps_wrote() -> None:
    assert loads(json.dumps(document()).encode(), "test") == parse(document(), "test")
