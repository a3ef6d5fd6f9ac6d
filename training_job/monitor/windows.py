"""Capture records grouped into windows (by count, by time, the last N), and a run of
the analyser over them.

Memory stays bounded however many records there are: windows are held until they add up
to BATCH_RECORDS records, then analysed together (a time window holds a uniform reservoir
sample of at most MAX_WINDOW_RECORDS for the tests, while its volume counts every record).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tqdm import tqdm

from training_job.monitor.analysis import RecordCounts, WindowAnalyzer, WindowResult
from training_job.monitor.captures import CapturedInference
from training_job.monitor.prefetch import ahead

MAX_WINDOW_RECORDS = 10_000
# Windows are analysed together until they hold this many records (see analyze_many).
BATCH_RECORDS = 2048


def windows_by_count(
    records: Iterable[CapturedInference], size: int
) -> Iterator[tuple[list[CapturedInference], int]]:
    batch: list[CapturedInference] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch, size
            batch = []
    if batch:
        yield batch, len(batch)


def windows_by_time(
    records: Iterable[CapturedInference], seconds: float, counts: RecordCounts, seed: int = 0
) -> Iterator[tuple[list[CapturedInference], int]]:
    """Consecutive records sharing a time bucket; untimed records join the current one."""
    rng = random.Random(seed)
    sample: list[CapturedInference] = []
    total = 0
    bucket: int | None = None
    for record in records:
        if record.time is None:
            counts.untimed += 1
            record_bucket = bucket
        else:
            record_bucket = math.floor(record.time.timestamp() / seconds)
        if bucket is not None and record_bucket != bucket and total:
            yield sample, total
            sample, total = [], 0
        bucket = record_bucket
        total += 1
        if len(sample) < MAX_WINDOW_RECORDS:
            sample.append(record)
        else:  # reservoir sampling keeps a uniform sample in bounded memory
            slot = rng.randrange(total)
            if slot < MAX_WINDOW_RECORDS:
                sample[slot] = record
    if total:
        yield sample, total


def last_records(
    records: Iterable[CapturedInference], size: int
) -> tuple[list[CapturedInference], int]:
    tail: deque[CapturedInference] = deque(maxlen=size)
    tail.extend(records)
    return list(tail), len(tail)


@dataclass
class Run:
    """What a report or check run produced."""

    results: list[WindowResult] = field(default_factory=list)

    def analyze_all(
        self,
        analyzer: WindowAnalyzer,
        windows: Iterable[tuple[list[CapturedInference], int]],
        progress: bool = True,
    ) -> None:
        """Reading, decoding and input statistics run on a thread one batch ahead of the
        model pass and the tests: PIL, zlib, numpy and torch release the GIL in their
        heavy loops, so the two halves share the machine's two cores."""
        counted = tqdm(windows, desc="windows", unit="win", disable=not progress)
        batches = (analyzer.prepare(batch) for batch in _batches(counted, BATCH_RECORDS))
        for prepared in ahead(batches):
            self.results.extend(analyzer.finish(prepared))


def _batches(
    windows: Iterable[tuple[list[CapturedInference], int]], records: int
) -> Iterator[list[tuple[int, list[CapturedInference], int]]]:
    """Consecutive windows, numbered, grouped until a group holds `records` records."""
    pending: list[tuple[int, list[CapturedInference], int]] = []
    held = 0
    for index, (window, total) in enumerate(windows):
        pending.append((index, window, total))
        held += len(window)
        if held >= records:
            yield pending
            pending, held = [], 0
    if pending:
        yield pending
