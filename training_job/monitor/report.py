"""From a stream of capture records to windows, verdicts, plots and an HTML report.

Memory stays bounded however many records there are: windows are held until they add up
to BATCH_RECORDS records, then analysed together (a time window holds a uniform reservoir
sample of at most MAX_WINDOW_RECORDS for the tests, while its volume counts every record),
and only a few numbers per window are kept for the plots.
"""

from __future__ import annotations

import base64
import html
import json
import math
import random
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from queue import Full, Queue
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from contract.review_quality import ALL_VERSIONS, VersionMeasures
from training_job import model_code
from training_job.monitor.baseline import Baseline
from training_job.monitor.captures import CapturedInference
from training_job.monitor.detectors import (
    ANSWER_DETECTORS,
    ANSWER_DRIFT,
    INPUT_DETECTORS,
    DriftMonitor,
    Finding,
    Window,
    describe_drift,
    drift_kind,
    performance,
)
from training_job.monitor.embedding import Embedder
from training_job.monitor.gallery import (
    FIRST_GALLERIES,
    Galleries,
    Gallery,
    Photo,
    doubtful_photos,
    least_confident,
    most_unusual,
)

T = TypeVar("T")
MAX_WINDOW_RECORDS = 10_000
# Windows are analysed together until they hold this many records (see analyze_many).
BATCH_RECORDS = 2048
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
            low_confidence_rate=float((confidences < self.baseline.threshold).mean()),
            class_share={c: float((predicted == i).mean()) for i, c in enumerate(classes)},
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


# ---- the verdict, the plots and the HTML page --------------------------------------------


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


def _tests(results: list[WindowResult], detectors: frozenset[str], shown: int = 4) -> str:
    """The alerting tests of `detectors`, the strongest (smallest adjusted p) first."""
    strongest: dict[str, float] = {}
    for f in (f for r in results for f in r.findings if f.alert and f.detector in detectors):
        name = f.test.replace("_", " ")
        strongest[name] = min(strongest.get(name, 1.0), f.p_adjusted)
    names = sorted(strongest, key=strongest.__getitem__)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "?"


def verdict(
    results: list[WindowResult], alpha: float, review: dict[str, VersionMeasures] | None = None
) -> list[str]:
    """The report's first lines, in plain words: what changed, since when, how sure; and
    what people's answers say, when the decisions table was read."""
    judged = [r for r in results if r.findings]
    sentences = []
    if not judged:
        sentences.append(
            f"No verdict: none of the {len(results)} windows held enough usable records to "
            "compare with the baseline."
        )
    else:
        alerting = [r for r in judged if r.alert]
        answers = [r for r in alerting if r.drift == ANSWER_DRIFT]
        if alerting:
            first = answers[0] if answers else alerting[0]
            since = [r for r in judged if r.index >= first.index]
            every = all(r.alert for r in since)
            if answers:
                what = (
                    "The model's answers changed ("
                    + _tests(answers, ANSWER_DETECTORS)
                    + ")"
                    + (
                        ", and so did the photos (" + _tests(answers, INPUT_DETECTORS) + ")"
                        if any(
                            f.alert and f.detector in INPUT_DETECTORS
                            for r in answers
                            for f in r.findings
                        )
                        else ", the photos did not"
                    )
                )
            else:
                what = (
                    "The photos changed (" + _tests(alerting, INPUT_DETECTORS) + ") but the "
                    "model's answers did not"
                )
            sentences.append(
                f"{what}: since the window {window_span(first)}, "
                + (
                    f"in every one of the {len(since)} windows since."
                    if every
                    else f"in {sum(r.alert for r in since)} of the {len(since)} windows since."
                )
            )
            strongest = min(f.p_adjusted for f in first.findings if f.alert)
            sentences.append(
                f"How sure: {len(alerting)} of {len(judged)} windows alerted; a window's tests "
                f"together alarm falsely at most {alpha:.0%} of the time (Holm-corrected), so "
                f"chance explains about {alpha * len(judged):.2g} alerting windows of "
                f"{len(judged)}; in the first, the strongest test's adjusted p = {strongest:.2g}."
            )
        else:
            smallest = min(f.p_adjusted for r in judged for f in r.findings)
            sentences.append(
                f"No drift: none of the {len(judged)} windows from {window_span(judged[0])} "
                f"to {window_span(judged[-1])} differs from the baseline "
                f"(smallest Holm-adjusted p = {smallest:.2g}, alert at {alpha})."
            )
    if review is not None:
        audited = [
            (version, m.accuracy_past_gate)
            for version, m in review.items()
            if version != ALL_VERSIONS and m.accuracy_past_gate.n
        ]
        if audited:
            sentences.append(
                "People's answers: accuracy past the gate "
                + "; ".join(
                    f"{a.value:.1%} for model version {version} (95% CI "
                    f"{(a.interval or (0, 1))[0]:.1%} to {(a.interval or (0, 1))[1]:.1%}, "
                    f"{a.n} audited photos)"
                    for version, a in audited
                )
                + "."
            )
        else:
            sentences.append("People's answers: no audited photo has been answered yet.")
    return sentences


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 3.2), dpi=100)
    return figure, axes


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    _note_ticks(figure.axes[0], path)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def x_tick_labels(path: Path) -> list[str]:
    """The x axis labels a plot was drawn with (its offset text, such as the date, last),
    as `write_plots` noted them beside the PNG: the page carries them as text."""
    ticks = path.with_suffix(".xticks.json")
    return list(json.loads(ticks.read_text())) if ticks.exists() else []


def _note_ticks(axes: Any, path: Path) -> None:
    axes.figure.canvas.draw()
    labels = [t.get_text() for t in axes.get_xticklabels() if t.get_text()]
    offset = axes.xaxis.get_offset_text().get_text()
    path.with_suffix(".xticks.json").write_text(json.dumps(labels + ([offset] if offset else [])))


@dataclass
class TimeAxis:
    """Where each window lies on a plot's x axis: from its first to its last capture time,
    or (captures without times) at its number."""

    starts: np.ndarray
    ends: np.ndarray
    timed: bool

    @classmethod
    def of(cls, results: list[WindowResult]) -> TimeAxis:
        if results and all(r.start is not None and r.end is not None for r in results):
            from matplotlib import dates

            starts = np.array([dates.date2num(r.start) for r in results])
            ends = np.array([dates.date2num(r.end) for r in results])
            # A window of one record (or one instant) still gets a visible width.
            least = max((ends.max() - starts.min()) * 0.003, 1 / 86400)
            return cls(starts, np.maximum(ends, starts + least), True)
        index = np.array([r.index for r in results], dtype=np.float64)
        return cls(index - 0.4, index + 0.4, False)

    @property
    def middles(self) -> np.ndarray:
        return (self.starts + self.ends) / 2

    @property
    def widths(self) -> np.ndarray:
        return self.ends - self.starts

    def dress(self, axes: Any, results: list[WindowResult]) -> None:
        """The axis's time labels, and each alerting window shaded."""
        from matplotlib import dates, ticker

        for start, end, result in zip(self.starts, self.ends, results, strict=True):
            if result.alert:
                axes.axvspan(start, end, color="#d33", alpha=0.12, lw=0)
        if self.timed:
            locator = dates.AutoDateLocator()
            axes.xaxis.set_major_locator(locator)
            axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
            axes.set_xlabel("capture time (UTC); shaded: alerting windows")
        else:
            axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
            axes.set_xlabel("window number (captures carry no time); shaded: alerting")


def write_plots(
    results: list[WindowResult], analyzer: WindowAnalyzer, alpha: float, out: Path
) -> list[tuple[str, Path]]:
    baseline = analyzer.baseline
    plots: list[tuple[str, Path]] = []
    axis = TimeAxis.of(results)

    figure, axes = _figure()
    axes.bar(
        axis.starts,
        [r.records for r in results],
        axis.widths,
        align="edge",
        color="#888",
        label="records",
    )
    axes.bar(
        axis.starts,
        [r.used for r in results],
        axis.widths,
        align="edge",
        color="#3a7",
        label="used by the detectors",
    )
    axes.set(title="Volume per window", ylabel="records")
    axis.dress(axes, results)
    axes.legend()
    plots.append(("Volume", _save(figure, out / "volume.png")))

    figure, axes = _figure()
    bottom = np.zeros(len(results))
    for name in baseline.classes:
        share = np.nan_to_num(np.array([r.class_share.get(name, np.nan) for r in results]))
        axes.bar(axis.starts, share, axis.widths, bottom=bottom, align="edge", label=name)
        bottom += share
    first_share = float((baseline.probabilities.argmax(1) == 0).mean())
    axes.axhline(first_share, color="k", ls="--", label=f"baseline {baseline.classes[0]} share")
    axes.set(title="Predicted class mix", ylabel="share", ylim=(0, 1))
    axis.dress(axes, results)
    axes.legend(loc="lower right")
    plots.append(("Class mix", _save(figure, out / "class_mix.png")))

    figure, axes = _figure()
    centres = (CONFIDENCE_BINS[:-1] + CONFIDENCE_BINS[1:]) / 2
    total = max(1, int(analyzer.confidence_histogram.sum()))
    axes.bar(centres, analyzer.confidence_histogram / total, width=0.018, label="captured")
    reference_histogram = np.histogram(baseline.confidences, CONFIDENCE_BINS)[0]
    axes.step(
        centres,
        reference_histogram / len(baseline.confidences),
        where="mid",
        color="k",
        label="baseline",
    )
    axes.axvline(baseline.threshold, color="r", ls="--", label=f"threshold {baseline.threshold}")
    axes.set(title="Top-class confidence", xlabel="confidence", ylabel="share")
    axes.legend()
    plots.append(("Confidence histogram", _save(figure, out / "confidence_histogram.png")))

    # Each window's confidences as a box over its own time span (10-90% light, 25-75%
    # dark, the median a line): honest with two windows, a curve with two hundred.
    figure, axes = _figure()
    band = np.quantile(baseline.confidences, [0.1, 0.9])
    axes.axhspan(band[0], band[1], color="k", alpha=0.08, label="baseline 10–90%")
    labelled = False
    for start, end, r in zip(axis.starts, axis.ends, results, strict=True):
        if not r.confidence_quantiles:
            continue
        q = r.confidence_quantiles
        axes.fill_between(
            [start, end],
            q[0],
            q[4],
            color="C0",
            alpha=0.25,
            lw=0,
            label=None if labelled else "window 10–90%",
        )
        axes.fill_between(
            [start, end],
            q[1],
            q[3],
            color="C0",
            alpha=0.45,
            lw=0,
            label=None if labelled else "window 25–75%",
        )
        axes.hlines(q[2], start, end, color="C0", lw=2, label=None if labelled else "median")
        labelled = True
    axes.axhline(
        baseline.threshold, color="r", ls="--", lw=1, label=f"threshold {baseline.threshold}"
    )
    axes.set(title="Confidence over time", ylabel="top-class confidence")
    axis.dress(axes, results)
    axes.legend(fontsize="small", loc="lower left")
    plots.append(("Confidence over time", _save(figure, out / "confidence_over_time.png")))

    figure, axes = _figure()
    axes.plot(
        axis.middles,
        [np.nan if r.low_confidence_rate is None else r.low_confidence_rate for r in results],
        marker="o",
        label="window",
    )
    axes.axhline(
        float((baseline.confidences < baseline.threshold).mean()),
        color="k",
        ls="--",
        label="baseline",
    )
    axes.set(title=f"Doubtful share (below {baseline.threshold})", ylabel="share")
    axis.dress(axes, results)
    axes.legend()
    plots.append(("Low-confidence rate", _save(figure, out / "low_confidence_rate.png")))

    references = dict(baseline.statistics)
    if baseline.upload_bytes is not None:
        references["upload_bytes"] = baseline.upload_bytes
    for name, reference in references.items():
        figure, axes = _figure()
        rows = [
            (middle, r.statistic_quantiles[name])
            for middle, r in zip(axis.middles, results, strict=True)
            if name in r.statistic_quantiles
        ]
        if rows:
            spread = np.array([row[1] for row in rows])
            x = [row[0] for row in rows]
            axes.fill_between(x, spread[:, 1], spread[:, 3], alpha=0.3, label="window 25–75%")
            axes.plot(x, spread[:, 2], marker=".", label="window median")
        low, high = np.quantile(reference, [0.05, 0.95])
        axes.axhspan(low, high, color="k", alpha=0.08, label="baseline 5–95%")
        axes.axhline(float(np.median(reference)), color="k", ls="--", lw=1, label="baseline median")
        axes.set(title=f"Input statistic: {name}", ylabel=name)
        axis.dress(axes, results)
        axes.legend(fontsize="small")
        plots.append((f"Input: {name}", _save(figure, out / f"input_{name}.png")))

    figure, axes = _figure()
    tests = sorted({(f.detector, f.test) for r in results for f in r.findings})
    for detector, test in tests:
        points = [
            (middle, f.p_adjusted)
            for middle, r in zip(axis.middles, results, strict=True)
            for f in r.findings
            if (f.detector, f.test) == (detector, test)
        ]
        axes.plot(
            [p[0] for p in points],
            [max(p[1], 1e-12) for p in points],
            marker=".",
            lw=1,
            label=f"{detector}:{test}",
        )
    axes.axhline(alpha, color="r", ls="--", label=f"alert (alpha {alpha})")
    axes.set_yscale("log")
    axes.set(title="Holm-adjusted p-value per window", ylabel="p")
    axis.dress(axes, results)
    if tests:
        axes.legend(fontsize="x-small", ncol=3)
    plots.append(("Detector p-values", _save(figure, out / "p_values.png")))
    return plots


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _grid(title: str, photos: list[Photo], empty: str, kind: str) -> str:
    cells = "".join(
        f"<img src='{_data_uri(p.png)}' alt='{html.escape(p.caption)}' "
        f"title='{html.escape(p.caption)}'>"
        for p in photos
    )
    body = f"<div class='grid'>{cells}</div>" if photos else f"<p class='empty'>{empty}</p>"
    return f"<figure class='{kind}'><figcaption>{html.escape(title)}</figcaption>{body}</figure>"


def _review_table(review: dict[str, Any]) -> str:
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    rows = []
    for version, m in review.items():
        accuracy, agreement = m["accuracy_past_gate"], m["doubtful_agreement"]
        interval = (
            f"{percent(accuracy['low'])} to {percent(accuracy['high'])}" if accuracy["n"] else "-"
        )
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(cell))}</td>"
                for cell in (
                    "all versions" if version == ALL_VERSIONS else version,
                    m["decisions"],
                    percent(m["doubtful_share"]),
                    percent(accuracy["value"]),
                    interval,
                    accuracy["n"],
                    accuracy["neither"],
                    f"{percent(agreement['value'])} of {agreement['n']}",
                    m["pending"],
                )
            )
            + "</tr>"
        )
    return (
        "<table class='review'><tr><th>model version</th><th>decisions</th>"
        "<th>doubtful share</th><th>accuracy past the gate</th><th>95% CI (Wilson)</th>"
        "<th>audited answers</th><th>of them 'neither'</th>"
        "<th>agreement on doubtful photos</th><th>waiting</th></tr>"
        + "".join(rows)
        + "</table><p class='note'>Accuracy past the gate: of the photos that passed the "
        "threshold and were sampled for audit, the share a person confirmed; a 'neither' "
        "answer counts as wrong (the routing system acted on a wrong label).</p>"
    )


def write_html(
    summary: dict[str, Any],
    plots: list[tuple[str, Path]],
    path: Path,
    galleries: list[Gallery] | None = None,
    baseline_photos: tuple[list[Photo], str] | None = None,
    galleries_dropped: int = 0,
) -> None:
    """One self-contained page: the verdict first, then people's answers, the photos of
    the alerting windows, and the plots; every image inlined, no external resources."""
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary["damage"].items()
    )
    latest = summary.get("latest_window") or {}
    finding_rows = "".join(
        "<tr><td>{}</td><td>{}</td><td>{:.4g}</td><td>{}</td><td>{}</td></tr>".format(
            html.escape(f["detector"]),
            html.escape(f["test"]),
            f["statistic"],
            "-" if f["p_adjusted"] is None else f"{f['p_adjusted']:.3g}",
            "ALERT" if f["alert"] else "ok",
        )
        for f in latest.get("findings", [])
    )
    images = "".join(
        f"<h3>{html.escape(title)}</h3><img class='plot' alt='{html.escape(title)}' "
        f"data-xticks='{html.escape(json.dumps(x_tick_labels(p)))}' "
        f"src='{_data_uri(p.read_bytes())}'>"
        for title, p in plots
    )
    if summary["answer_drift_windows"]:
        headline, tone = "ALERT: the model's answers moved", "alert"
    elif summary["input_drift_windows"]:
        headline, tone = "Input drift, the model's answers unchanged", "input"
    else:
        headline, tone = "No drift detected", "ok"
    sentences = "".join(f"<p>{html.escape(s)}</p>" for s in summary.get("verdict", []))
    review = summary.get("review")
    review_part = (
        f"<h2>People's answers, per model version</h2>{_review_table(review)}" if review else ""
    )
    windows = {w["index"]: w for w in summary.get("window_results", [])}
    photos, source = baseline_photos or ([], "no baseline photos")
    baseline_grid = _grid(f"Baseline photos ({source})", photos, html.escape(source), "baseline")
    sections = []
    for number, gallery in enumerate(galleries or []):
        window = windows.get(gallery.index, {})
        span = html.escape(str(window.get("span", f"window {gallery.index}")))
        sections.append(
            f"<section class='window' id='window-{gallery.index}'>"
            f"<h3>{span}: {html.escape(str(window.get('verdict', '')))}</h3><div class='grids'>"
            + _grid(
                "Most unusual (farthest from the baseline in the model's embedding)",
                gallery.unusual,
                "no photo was embedded",
                "unusual",
            )
            + _grid(
                f"Doubtful ({len(gallery.doubtful)} least confident of "
                f"{gallery.doubtful_total} below the threshold)",
                gallery.doubtful,
                "no photo below the threshold",
                "doubtful",
            )
            + baseline_grid
            + "</div></section>"
        )
        if number == FIRST_GALLERIES - 1 and galleries_dropped:
            sections.append(
                f"<p class='note'>{galleries_dropped} alerting windows between these are "
                "not shown (summary.json lists them).</p>"
            )
    photos_part = "<h2>Photos of the alerting windows</h2>" + "".join(sections) if sections else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Drift report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px}}
td,th{{padding:2px 8px;text-align:left}}img.plot{{max-width:100%}}
#verdict{{border-left:6px solid #888;padding:4px 12px;background:#f6f6f6;font-size:1.1em}}
#verdict.alert{{border-color:#c22}}#verdict.input{{border-color:#d90}}
#verdict.ok{{border-color:#3a7}}.grids{{display:flex;gap:16px;flex-wrap:wrap}}
figure{{margin:0;flex:1;min-width:300px}}figcaption{{font-size:.9em;margin:4px 0}}
.grid{{display:grid;grid-template-columns:repeat(6,52px);gap:3px}}
.grid img{{width:52px;height:52px;image-rendering:pixelated}}
figure.baseline{{background:#eef5ee;padding:4px}}.note,.empty{{color:#555;font-size:.9em}}
</style></head><body>
<h1>Drift report: {html.escape(headline)}</h1>
<div id="verdict" class="{tone}">{sentences}</div>
<p>Captures: {html.escape(str(summary["captures"]))}
<br>Baseline: {html.escape(str(summary["baseline"]))}
<br>{summary["windows"]} windows, {summary["alerting_windows"]} with an alert:
{summary["answer_drift_windows"]} where the model's answers moved,
{summary["input_drift_windows"]} with input drift only, model answers unchanged
(Holm family-wise alpha {summary["alpha"]}).</p>
{review_part}{photos_part}
<h2>Latest window ({html.escape(str(latest.get("span", "none")))}):
{html.escape(str(latest.get("verdict", "no window")))}</h2>
<table><tr><th>detector</th><th>test</th><th>statistic</th>
<th>adjusted p</th><th>verdict</th></tr>{finding_rows}</table>
<h2>Damaged or unusable input (counted, skipped)</h2><table>{rows}</table>
<h2>Plots</h2>{images}</body></html>"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)


def write_summary(summary: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


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
        for prepared in _ahead(batches):
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


_DONE = object()


def _ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """What `items` yields, computed on a thread up to `depth` items ahead of the caller.
    An exception in `items` is raised here; a caller that stops early stops the thread."""
    queue: Queue[tuple[Any, BaseException | None]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                queue.put((item, error), timeout=0.1)
                return True
            except Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # handed to the caller, who raises it
            put(_DONE, error)
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="monitor-prepare", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
