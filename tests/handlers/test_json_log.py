"""The handlers' log: one JSON object a line, with the request id."""

from __future__ import annotations

import json

import pytest

from handlers.json_log import log


def test_log_writes_one_json_object_per_line_with_the_request_id(
    capsys: pytest.CaptureFixture[str], lambda_context: object
) -> None:
    log("INFO", "image classified", lambda_context, s3_key="test/a.png", label="bicycle", x=None)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "INFO"
    assert record["message"] == "image classified"
    assert record["request_id"] == "c0ffee00-0000-4000-8000-000000000001"
    assert record["function"] == "scones-unlimited-test-handler"
    assert record["s3_key"] == "test/a.png"
    assert record["label"] == "bicycle"
    assert "x" not in record
