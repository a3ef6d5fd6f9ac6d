"""training_job/arguments.py: bounded numbers for every command's options."""

from __future__ import annotations

import argparse

import pytest

from training_job.arguments import bounded


def parser_with(kind: type, *bounds: float | None, **open_ends: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmd", exit_on_error=False)
    parser.add_argument("--n", type=bounded(kind, "a number as asked", *bounds, **open_ends))
    return parser


@pytest.mark.parametrize(
    ("kind", "bounds", "open_ends", "text", "value"),
    [
        (int, (1, None), {}, "1", 1),
        (int, (1, 50), {}, "50", 50),
        (int, (0, 3600), {}, " 7 ", 7),
        (float, (0, 1), {}, "0", 0.0),
        (float, (0, None), {"above": True}, "0.001", 0.001),
        (float, (0, 1), {"above": True, "below": True}, "0.5", 0.5),
    ],
)
def test_a_number_within_its_bounds_is_its_value(
    kind: type, bounds: tuple, open_ends: dict[str, bool], text: str, value: float
) -> None:
    assert parser_with(kind, *bounds, **open_ends).parse_args(["--n", text]).n == value


@pytest.mark.parametrize(
    ("kind", "bounds", "open_ends", "text"),
    [
        (int, (1, None), {}, "0"),
        (int, (1, 50), {}, "51"),
        (int, (1, 50), {}, "2.5"),
        (int, (1, None), {}, "abc"),
        (int, (1, None), {}, ""),
        (int, (1, None), {}, "9" * 10_000),
        (float, (0, None), {"above": True}, "0"),
        (float, (0, 1), {"above": True, "below": True}, "1"),
        (float, (0, None), {}, "nan"),
        (float, (0, None), {}, "inf"),
        (float, (0, None), {}, "1e400"),
        (float, (0, None), {}, "-0.1"),
    ],
)
def test_anything_else_is_refused_with_what_was_expected(
    kind: type, bounds: tuple, open_ends: dict[str, bool], text: str
) -> None:
    with pytest.raises(argparse.ArgumentError) as refused:
        parser_with(kind, *bounds, **open_ends).parse_args(["--n", text])
    message = str(refused.value)
    assert "is not a number as asked" in message
    assert len(message) < 200  # a hostile text is cut, not repeated
