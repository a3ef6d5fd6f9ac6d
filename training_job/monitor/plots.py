"""The report's plots: volume, class mix, confidence, input statistics and p-values per
window, as PNG files (matplotlib, imported only when a report is drawn)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training_job.monitor.analysis import CONFIDENCE_BINS, WindowAnalyzer, WindowResult


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
