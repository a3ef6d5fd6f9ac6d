"""One window of capture records, analysed: decoded, measured like the baseline, embedded,
and judged by the drift detectors (windows.py makes the windows, verdict.py, plots.py and
report_page.py show the results).

Windows are analysed together until they add up to windows.BATCH_RECORDS records, and
only a few numbers per window are kept for the plots.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from contract.drift_statistics import below_threshold, class_counts
from training_job import model_code
from training_job.monitor.baseline import Baseline
from training_job.monitor.captures import CapturedInference
from training_job.monitor.detectors import Finding, Window, performance
from training_job.monitor.drift_monitor import DriftMonitor, describe_drift, drift_kind
from training_job.monitor.embedding import Embedder
from training_job.monitor.gallery import (
    Galleries,
    Gallery,
    doubtful_photos,
    least_confident,
    most_unusual,
)

STATISTICS_CHUNK = 256
CONFIDENCE_BINS = np.linspace(0.0, 1.0, 51)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class RecordCounts:
    """Records the detectors could not use, by reason (never fatal)."""

    not_image: int = 0
    other_model: int = 0
    untimed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class WindowResult:
    index: int
    start: datetime | None
    end: datetime | None
    records: int
    used: int
    not_image: int
    other_model: int
    low_confidence_rate: float | None
    class_share: dict[str, float]
    confidence_quantiles: list[float]
    statistic_quantiles: dict[str, list[float]]
    findings: list[Finding]
    performance: dict[str, Any] | None
    # The share of the window's embedded sample the model calls unfamiliar (issue 23);
    # None when the model version has no familiarity statistics.
    unfamiliar_rate: float | None = None

    @property
    def alert(self) -> bool:
        return any(f.alert for f in self.findings)

    @property
    def drift(self) -> str:
        """detectors.NO_DRIFT, INPUT_DRIFT or ANSWER_DRIFT."""
        return drift_kind(self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "span": window_span(self),
            "records": self.records,
            "used": self.used,
            "not_image": self.not_image,
            "other_model": self.other_model,
            "low_confidence_rate": self.low_confidence_rate,
            "unfamiliar_rate": self.unfamiliar_rate,
            "class_share": self.class_share,
            "confidence_quantiles": self.confidence_quantiles,
            "alert": self.alert,
            "drift": self.drift,
            "verdict": describe_drift(self.findings) if self.findings else "no verdict",
            "findings": [f.as_dict() for f in self.findings],
            "performance": self.performance,
        }


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "?"


def window_span(result: WindowResult) -> str:
    """'2026-11-24 09:00 to 09:30 UTC' (the window's first and last record), or its number."""
    if result.start is None or result.end is None:
        return f"window {result.index} (no capture times)"
    start, end = _when(result.start), _when(result.end)
    if start[:10] == end[:10]:
        end = end[11:]
    return f"{start} to {end} UTC"


@dataclass
class _Decoded:
    """One window's records, decoded; what the batched steps need."""

    index: int
    total: int
    start: datetime | None
    end: datetime | None
    not_image: int
    other_model: int
    images: list[np.ndarray] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    probabilities: list[tuple[float, ...]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    # For the report's photos: which rows were embedded, and the doubtful rows' pixels.
    picked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    doubtful_pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 32, 32, 3)))
    doubtful_probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    doubtful_total: int = 0


@dataclass
class PreparedBatch:
    """Windows decoded and measured, waiting for the model pass (see WindowAnalyzer)."""

    decoded: list[_Decoded]
    windows: list[tuple[_Decoded, Window]]
    to_embed: np.ndarray
    embedding_offsets: list[int]


class WindowAnalyzer:
    """Decodes a window's records, measures them like the baseline, runs the detectors.

    `analyze_many` takes several windows at once: every image is decoded once, the input
    statistics run over the batch, and the embedding samples of all its windows go through
    the model in large batches (the model pass is most of a report's CPU time, and a batch
    of 50 images costs about three times as much per image as one of 500)."""

    def __init__(
        self,
        baseline: Baseline,
        embedder: Embedder,
        monitor: DriftMonitor,
        embedding_sample: int,
        labels: dict[str, str] | None = None,
        seed: int = 0,
        familiarity: Any = None,
    ) -> None:
        if embedder.full_dimensions != baseline.embeddings.shape[1]:
            raise ValueError(
                f"the model embeds in {embedder.full_dimensions} dimensions, the baseline "
                f"in {baseline.embeddings.shape[1]}: another model?"
            )
        self.baseline = baseline
        self.embedder = embedder
        # The model's familiarity check (familiarity.Familiarity), None for a version
        # without it: the windows' unfamiliar share is then unknown.
        self.familiarity = familiarity
        self.monitor = monitor
        self.embedding_sample = embedding_sample
        self.labels = labels
        self.rng = np.random.default_rng(seed)
        self.imaging = model_code.imaging()
        self.profile = model_code.profile()
        self.counts = RecordCounts()
        self.confidence_histogram = np.zeros(len(CONFIDENCE_BINS) - 1, dtype=np.int64)
        self.galleries = Galleries()

    def _label_index(self, record: CapturedInference) -> int:
        if self.labels is None:
            return -1
        for identifier in (record.inference_id, record.event_id):
            label = self.labels.get(identifier) if identifier else None
            if label is None:
                continue
            if label in self.baseline.classes:
                return self.baseline.classes.index(label)
            if label.isdigit() and int(label) < len(self.baseline.classes):
                return int(label)
        return -1

    def _decode(self, index: int, records: list[CapturedInference], total: int) -> _Decoded:
        times = [r.time for r in records if r.time is not None]
        window = _Decoded(index, total, min(times, default=None), max(times, default=None), 0, 0)
        classes = len(self.baseline.classes)
        for record in records:
            if len(record.probabilities) != classes:
                window.other_model += 1
                continue
            try:
                window.images.append(self.imaging.decode(record.body))
            except self.imaging.ImageDecodeError:
                window.not_image += 1
                continue
            window.sizes.append(len(record.body))
            window.types.append(record.content_type)
            window.probabilities.append(record.probabilities)
            window.labels.append(self._label_index(record))
        self.counts.not_image += window.not_image
        self.counts.other_model += window.other_model
        return window

    def _statistics(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        # Chunks of a few hundred images keep the float temporaries in cache.
        parts = [
            self.profile.input_statistics(pixels[start : start + STATISTICS_CHUNK])
            for start in range(0, len(pixels), STATISTICS_CHUNK)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def analyze(self, index: int, records: list[CapturedInference], total: int) -> WindowResult:
        return self.analyze_many([(index, records, total)])[0]

    def analyze_many(
        self, windows: list[tuple[int, list[CapturedInference], int]]
    ) -> list[WindowResult]:
        return self.finish(self.prepare(windows))

    def prepare(self, windows: list[tuple[int, list[CapturedInference], int]]) -> PreparedBatch:
        """Everything before the model pass: decoding, input statistics, the embedding
        sample. Touches no torch state, so it can run on a thread beside `finish`."""
        decoded = [self._decode(index, records, total) for index, records, total in windows]
        usable = [w for w in decoded if w.images]
        if not usable:
            return PreparedBatch(decoded, [], np.zeros((0, 32, 32, 3), np.uint8), [0])
        pixels = np.stack([image for w in usable for image in w.images])
        statistics = self._statistics(pixels)
        offsets = np.cumsum([0] + [len(w.images) for w in usable])
        chosen, prepared = [], []
        for number, w in enumerate(usable):
            picked = np.arange(len(w.images))
            if len(picked) > self.embedding_sample:
                picked = np.sort(self.rng.choice(len(picked), self.embedding_sample, False))
            chosen.append(offsets[number] + picked)
            w.picked = picked
            rows = slice(offsets[number], offsets[number + 1])
            answers = np.asarray(w.probabilities, dtype=np.float64)
            doubtful, w.doubtful_total = least_confident(
                pixels[rows], answers, self.baseline.threshold, self.baseline.classes
            )
            w.doubtful_pixels = pixels[rows][doubtful].copy()  # a few, kept for the photos
            w.doubtful_probabilities = answers[doubtful]
            window = Window(
                statistics={name: values[rows] for name, values in statistics.items()},
                upload_bytes=np.asarray(w.sizes, dtype=np.float64),
                content_types=Counter(w.types),
                probabilities=np.asarray(w.probabilities, dtype=np.float64),
                labels=np.asarray(w.labels, dtype=np.int64),
            )
            prepared.append((w, window))
            w.images = []  # the batch's pixel array holds them now
        to_embed = pixels[np.concatenate(chosen)]
        return PreparedBatch(
            decoded, prepared, to_embed, list(np.cumsum([0] + [len(c) for c in chosen]))
        )

    def finish(self, batch: PreparedBatch) -> list[WindowResult]:
        """The model pass over the batch's embedding samples, then each window's tests."""
        embeddings = self.embedder(batch.to_embed)
        unfamiliar = None
        if self.familiarity is not None and len(batch.to_embed):
            tensor = self.embedder.model.to_tensor(batch.to_embed, self.embedder.config)
            unfamiliar = ~self.familiarity.familiar(
                self.familiarity.distances(self.embedder.net, tensor)
            )
        offsets = batch.embedding_offsets
        results = {}
        for number, (w, window) in enumerate(batch.windows):
            rows = slice(offsets[number], offsets[number + 1])
            window.embeddings = embeddings[rows]
            if unfamiliar is not None:
                window.unfamiliar = unfamiliar[rows]
            results[w.index] = self._result(w, window)
            if results[w.index].alert:
                self.galleries.add(self._gallery(w, window, batch.to_embed[rows], embeddings[rows]))
        return [results.get(w.index) or self._empty(w) for w in batch.decoded]

    def _gallery(
        self, w: _Decoded, window: Window, embedded_pixels: np.ndarray, embedded: np.ndarray
    ) -> Gallery:
        classes = self.baseline.classes
        return Gallery(
            index=w.index,
            unusual=most_unusual(
                embedded_pixels,
                embedded,
                self.baseline.embeddings,
                window.probabilities[w.picked],
                classes,
            ),
            doubtful=doubtful_photos(w.doubtful_pixels, w.doubtful_probabilities, classes),
            doubtful_total=w.doubtful_total,
        )

    def _empty(self, w: _Decoded) -> WindowResult:
        return WindowResult(
            w.index,
            w.start,
            w.end,
            w.total,
            0,
            w.not_image,
            w.other_model,
            None,
            {},
            [],
            {},
            [],
            None,
        )

    def _result(self, w: _Decoded, window: Window) -> WindowResult:
        classes = self.baseline.classes
        findings = self.monitor.test(window)
        confidences = window.probabilities.max(axis=1)
        self.confidence_histogram += np.histogram(confidences, CONFIDENCE_BINS)[0]
        predicted = window.probabilities.argmax(axis=1)
        return WindowResult(
            index=w.index,
            start=w.start,
            end=w.end,
            records=w.total,
            used=window.size,
            not_image=w.not_image,
            other_model=w.other_model,
            # The Lambda's LowConfidenceRate and ClassShare (contract/drift_statistics.py).
            low_confidence_rate=below_threshold(confidences.tolist(), self.baseline.threshold)
            / window.size,
            class_share={
                c: count / window.size
                for c, count in class_counts(predicted.tolist(), classes).items()
            },
            confidence_quantiles=[float(q) for q in np.quantile(confidences, QUANTILES)],
            statistic_quantiles={
                name: [float(q) for q in np.quantile(values, QUANTILES)]
                for name, values in [
                    *window.statistics.items(),
                    ("upload_bytes", window.upload_bytes),
                ]
            },
            findings=findings,
            performance=performance(window, classes),
            unfamiliar_rate=(
                float(window.unfamiliar.mean())
                if window.unfamiliar is not None and len(window.unfamiliar)
                else None
            ),
        )
