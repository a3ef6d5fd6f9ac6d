"""The report's files: one self-contained HTML page and summary.json."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from contract.review_quality import ALL_VERSIONS
from training_job.monitor.gallery import FIRST_GALLERIES, Gallery, Photo
from training_job.monitor.plots import x_tick_labels


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
