"""Counters the workers share, and their Prometheus text rendering for `GET /metrics`.

Each worker process writes only its own slot (a shared-memory array of doubles, so no
lock is needed), and any worker answering `/metrics` sums every slot: the numbers are
the endpoint's, whichever process the request reached.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.sharedctypes
from collections.abc import Sequence
from typing import Any

from contract import review_quality, variant_metrics

STATUSES = (200, 400, 404, 405, 406, 408, 413, 415, 424, 500, 503)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CAPTURE_COUNTERS = (
    "records_spooled",  # written to the local spool before the answer
    "records_written",  # in S3, and deleted from the spool
    "records_dropped",  # the spool was full or could not be written: alarm on this
    "records_damaged",  # unreadable lines found in the spool (a disk fault)
    "objects_written",
    "put_failures",  # S3 writes that failed and are retried
)

# Per variant (production and shadow), at the variant's position in the routing
# (local_aws/endpoint/routing.py): what CloudWatch's per-variant metrics and the rollout's
# alarms are made of. "doubtful", "confidence_sum" and "class_<i>": the sums of the answer
# metrics (contract/variant_metrics.py, ANSWER_COUNTERS); "shadow_compared"/"shadow_agreed":
# shadow answers, and those naming the same class as the production answer to the request.
MAX_VARIANTS = 8
MODEL_CLASSES = review_quality.MODEL_CLASSES
ANSWER_COUNTERS = {
    variant_metrics.DOUBTFUL_SHARE: "doubtful",
    variant_metrics.CONFIDENCE: "confidence_sum",
    **{variant_metrics.class_share(label): f"class_{i}" for i, label in enumerate(MODEL_CLASSES)},
}
VARIANT_COUNTERS = (
    "invocations",
    "errors_4xx",
    "errors_5xx",
    *ANSWER_COUNTERS.values(),
    "shadow_compared",
    "shadow_agreed",
    "latency_sum",
)
_VARIANT_SIZE = len(VARIANT_COUNTERS) + len(LATENCY_BUCKETS) + 1

# Slot layout: statuses (+ "other"), latency buckets (+ +Inf), latency sum, batch
# buckets (+ +Inf), batch sum, the capture counters, the spool's size (a gauge), the
# routing generation this worker serves, then MAX_VARIANTS variant blocks (the counters,
# then model latency buckets + +Inf).
_STATUS = 0
_LATENCY = _STATUS + len(STATUSES) + 1
_LATENCY_SUM = _LATENCY + len(LATENCY_BUCKETS) + 1
_BATCH = _LATENCY_SUM + 1
_BATCH_SUM = _BATCH + len(BATCH_BUCKETS) + 1
_CAPTURE = _BATCH_SUM + 1
_SPOOL_BYTES = _CAPTURE + len(CAPTURE_COUNTERS)
_GENERATION = _SPOOL_BYTES + 1
_VARIANTS = _GENERATION + 1
SLOT_SIZE = _VARIANTS + MAX_VARIANTS * _VARIANT_SIZE

Slot = Any  # a multiprocessing RawArray of doubles (ctypes arrays have no useful stub)


def allocate_slots(workers: int) -> list[Slot]:
    """One zeroed slot per worker, created before the workers so each can be handed all."""
    context = multiprocessing.get_context("spawn")
    return [context.RawArray("d", SLOT_SIZE) for _ in range(workers)]


def _bucket_index(value: float, bounds: Sequence[float]) -> int:
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)


class WorkerMetrics:
    """The writing side, for one worker's slot."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot

    def observe_request(self, status: int, seconds: float) -> None:
        index = STATUSES.index(status) if status in STATUSES else len(STATUSES)
        self.slot[_STATUS + index] += 1
        self.slot[_LATENCY + _bucket_index(seconds, LATENCY_BUCKETS)] += 1
        self.slot[_LATENCY_SUM] += seconds

    def observe_batch(self, size: int) -> None:
        self.slot[_BATCH + _bucket_index(size, BATCH_BUCKETS)] += 1
        self.slot[_BATCH_SUM] += size

    def count_capture(self, counter: str, amount: int = 1) -> None:
        self.slot[_CAPTURE + CAPTURE_COUNTERS.index(counter)] += amount

    def set_capture_spool_bytes(self, size: int) -> None:
        self.slot[_SPOOL_BYTES] = size

    def set_generation(self, generation: int) -> None:
        self.slot[_GENERATION] = generation

    def count_variant(self, position: int, counter: str, amount: float = 1) -> None:
        self.slot[_variant_index(position, VARIANT_COUNTERS.index(counter))] += amount

    def count_answer(self, position: int, values: dict[str, float]) -> None:
        """One answer's answer metrics (variant_metrics.answer_values), summed per variant."""
        for metric, value in values.items():
            self.count_variant(position, ANSWER_COUNTERS[metric], value)

    def observe_variant_latency(self, position: int, seconds: float) -> None:
        start = _variant_index(position, len(VARIANT_COUNTERS))
        self.slot[start + _bucket_index(seconds, LATENCY_BUCKETS)] += 1
        self.count_variant(position, "latency_sum", seconds)


def _variant_index(position: int, offset: int) -> int:
    return _VARIANTS + position * _VARIANT_SIZE + offset


def applied_generation(slots: Sequence[Slot]) -> int:
    """The routing generation every worker serves (the oldest one a worker still serves)."""
    return int(min(slot[_GENERATION] for slot in slots))


def reset_variant(slots: Sequence[Slot], position: int) -> None:
    """Zero a position's counters in every slot before another variant takes it over."""
    for slot in slots:
        for offset in range(_VARIANT_SIZE):
            slot[_variant_index(position, offset)] = 0


def variant_counters(slots: Sequence[Slot], position: int) -> dict[str, Any]:
    """One variant's counters summed over the workers, with its latency histogram as
    [[upper bound in seconds (None: +Inf), count], ...]."""
    counters: dict[str, Any] = {
        name: _sum(slots, _variant_index(position, offset))
        for offset, name in enumerate(VARIANT_COUNTERS)
    }
    start = _variant_index(position, len(VARIANT_COUNTERS))
    counters["latency_buckets"] = [
        [bound, _sum(slots, start + offset)]
        for offset, bound in enumerate([*LATENCY_BUCKETS, None])
    ]
    return counters


def _sum(slots: Sequence[Slot], index: int) -> float:
    return float(sum(slot[index] for slot in slots))


def _histogram(
    lines: list[str], name: str, slots: Sequence[Slot], start: int, bounds: Sequence[float]
) -> None:
    cumulative = 0.0
    for offset, bound in enumerate([*bounds, float("inf")]):
        cumulative += _sum(slots, start + offset)
        label = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f'{name}_bucket{{le="{label}"}} {cumulative:g}')
    lines.append(f"{name}_count {cumulative:g}")


def render(slots: Sequence[Slot], variants: Sequence[str] = ()) -> str:
    """All workers' counters in the Prometheus text exposition format (version 0.0.4);
    `variants` names the variant at each position."""
    lines = [
        "# HELP endpoint_requests_total Invocation requests answered, by HTTP status.",
        "# TYPE endpoint_requests_total counter",
    ]
    for index, status in enumerate([*STATUSES, "other"]):
        lines.append(f'endpoint_requests_total{{status="{status}"}} {_sum(slots, index):g}')
    lines += [
        "# HELP endpoint_request_duration_seconds Time from request to response.",
        "# TYPE endpoint_request_duration_seconds histogram",
    ]
    _histogram(lines, "endpoint_request_duration_seconds", slots, _LATENCY, LATENCY_BUCKETS)
    lines.append(f"endpoint_request_duration_seconds_sum {_sum(slots, _LATENCY_SUM):g}")
    lines += [
        "# HELP endpoint_batch_size Images per forward pass.",
        "# TYPE endpoint_batch_size histogram",
    ]
    _histogram(lines, "endpoint_batch_size", slots, _BATCH, BATCH_BUCKETS)
    lines.append(f"endpoint_batch_size_sum {_sum(slots, _BATCH_SUM):g}")
    for offset, counter in enumerate(CAPTURE_COUNTERS):
        name = f"endpoint_capture_{counter}_total"
        lines += [
            f"# HELP {name} Data capture: {counter.replace('_', ' ')}.",
            f"# TYPE {name} counter",
            f"{name} {_sum(slots, _CAPTURE + offset):g}",
        ]
    lines += [
        "# HELP endpoint_capture_spool_bytes Captured records on local disk that S3 lacks.",
        "# TYPE endpoint_capture_spool_bytes gauge",
        f"endpoint_capture_spool_bytes {_sum(slots, _SPOOL_BYTES):g}",
    ]
    for counter in VARIANT_COUNTERS:
        name = f"endpoint_variant_{counter}" + ("" if counter == "latency_sum" else "_total")
        lines += [
            f"# HELP {name} Per variant (production or shadow): {counter.replace('_', ' ')}.",
            f"# TYPE {name} counter",
        ]
        for position, variant in enumerate(variants):
            value = _sum(slots, _variant_index(position, VARIANT_COUNTERS.index(counter)))
            lines.append(f'{name}{{variant="{variant}"}} {value:g}')
    return "\n".join(lines) + "\n"
