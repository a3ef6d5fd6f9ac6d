"""`monitor review`: the review measures of a decisions table in the local AWS."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.decisions_table import Traffic, create_decisions_table, put_items, simulate
from training_job.__main__ import main
from training_job.monitor.exits import EXIT_ANSWERS, EXIT_OK, EXIT_UNUSABLE

START = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def table(local_aws: dict[str, str]) -> str:
    """Read-only for the tests: made once (writing 5,760 items takes a while)."""
    unique_name = f"review-cli-{uuid.uuid4().hex[:12]}"
    create_decisions_table(unique_name)
    # Version 3 served the first two days, version 4 after: worse past the gate.
    put_items(unique_name, simulate(Traffic("3", photos=2880, start=START, accuracy=0.98), 1))
    later = START + timedelta(days=2)
    put_items(unique_name, simulate(Traffic("4", photos=2880, start=later, accuracy=0.8), 2))
    return unique_name


def review(table: str, *extra: str) -> int:
    return main(["monitor", "review", "--table", table, *extra])


def test_measures_each_version_and_pages_below_the_level(
    table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "measures.json"
    assert review(table, "--json", str(out)) == EXIT_OK
    printed = capsys.readouterr().out
    assert "model version 3: accuracy past the gate" in printed
    assert "model version 4: accuracy past the gate" in printed
    assert "all versions:" in printed
    measures = json.loads(out.read_text())
    assert measures["3"]["accuracy_past_gate"]["n"] >= 100
    three, four = (measures[v]["accuracy_past_gate"] for v in ("3", "4"))
    assert three["low"] <= 0.98 <= three["high"]
    assert four["low"] <= 0.8 <= four["high"]
    assert measures["4"]["doubtful_share"] == pytest.approx(0.1, abs=0.03)

    assert review(table, "--alarm-below", "0.9") == EXIT_ANSWERS
    assert "ALERT: model version 4" in capsys.readouterr().out
    assert review(table, "--alarm-below", "0.7") == EXIT_OK


def test_the_period_selects_decisions_by_decided_at(
    table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "measures.json"
    assert review(table, "--until", "2026-11-22T00:00:00Z", "--json", str(out)) == EXIT_OK
    assert set(json.loads(out.read_text())) == {"3", "all"}
    assert review(table, "--since", "2026-11-22", "--alarm-below", "0.9") == EXIT_ANSWERS
    assert review(table, "--since", "2027-01-01") == EXIT_OK
    assert "no decisions" in capsys.readouterr().out


def test_too_small_a_sample_is_no_verdict(table: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert review(table, "--alarm-below", "0.9", "--min-sample", "100000") == EXIT_UNUSABLE
    assert "no verdict" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments",
    [
        ["--table", "ab"],
        ["--table", "x" * 256],
        ["--table", "bad name!"],
        ["--table", "t-1", "--alarm-below", "1.5"],
        ["--table", "t-1", "--min-sample", "0"],
        ["--table", "t-1", "--since", "last week"],
        [],
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["monitor", "review", *arguments])
    assert exit_.value.code == EXIT_UNUSABLE
    assert "error:" in capsys.readouterr().err


def test_a_missing_table_is_an_aws_error_exit_2(
    local_aws: dict[str, str], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert review(unique_name) == EXIT_UNUSABLE
    assert "ResourceNotFoundException" in capsys.readouterr().err
