"""Numbers on the command line: one way to parse a bounded int or float for argparse.

Each command's options name their bounds and what the number is; the parser refuses
anything else with argparse's usage error (exit status 2) and a sentence that says what
was expected: `'0' is not a positive integer`, `'70' is not a canary percentage from 1
to 50`. A text that is not a number at all (`abc`, `1e400`, `nan`, a 10,000-digit
string) gets the same sentence, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from contract.sagemaker_names import NAME_PATTERN

Number = TypeVar("Number", int, float)
SHOWN_CHARACTERS = 40  # of a refused text, in the error


def bounded(
    kind: type[Number],
    what: str,
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    below: bool = False,
) -> Callable[[str], Number]:
    """An argparse `type`: the text as a `kind` from `low` to `high` (either may be None
    for no bound; `above`/`below` leave `low`/`high` themselves out), else an error
    saying the text is not `what`."""

    def parse(text: str) -> Number:
        try:
            value = kind(text.strip()) if len(text) <= 100 else None
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not within(value):
            raise argparse.ArgumentTypeError(f"{text[:SHOWN_CHARACTERS]!r} is not {what}")
        return value

    def within(value: float) -> bool:
        if low is not None and (value <= low if above else value < low):
            return False
        return high is None or not (value >= high if below else value > high)

    parse.__name__ = what  # argparse names the type by it in some of its messages
    return parse


# The ones every command uses.
positive_int = bounded(int, "a positive integer", 1)
positive_number = bounded(float, "a positive number", 0, above=True)
# A port to listen on or reach; 0 (any free port) is only for servers that print theirs.
port_number = bounded(int, "a port from 1 to 65535", 1, 65535)


def endpoint_name(text: str) -> str:
    """An argparse `type`: a SageMaker endpoint name (contract.sagemaker_names' rule), the
    one check of `--endpoint-name` for every command that takes it."""
    if not NAME_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"{text[:SHOWN_CHARACTERS]!r} is not a SageMaker endpoint name "
            "(letters, digits and hyphens, 1-63)"
        )
    return text
