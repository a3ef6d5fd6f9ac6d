"""The report's reading thread: items handed over in order, errors raised in the caller,
and a caller that stops early stops the thread."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import cast

import pytest

from training_job.monitor.captures import CaptureSourceError
from training_job.monitor.prefetch import ahead


def test_work_ahead_hands_over_items_and_errors_in_order() -> None:
    assert list(ahead(iter(range(10)))) == list(range(10))

    def failing() -> Iterator[int]:
        yield 1
        raise CaptureSourceError("no such bucket: gone")

    received = []
    with pytest.raises(CaptureSourceError, match="no such bucket"):
        for item in ahead(failing()):
            received.append(item)
    assert received == [1]

    produced: list[int] = []

    def endless() -> Iterator[int]:
        while True:
            produced.append(len(produced))
            yield produced[-1]

    prefetched = cast(Generator[int, None, None], ahead(endless(), depth=2))
    assert next(prefetched) == 0
    prefetched.close()  # joins the thread: nothing is produced after this
    stopped_at = len(produced)
    assert stopped_at <= 4
    assert list(prefetched) == [] and len(produced) == stopped_at
