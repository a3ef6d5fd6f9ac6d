"""`monitor report` as a person sees it: the page opened in a real headless Chromium.

Two hours of captured traffic from the real test photos, answered by the trained model:
the first hour as they are, the second with a night-time noise on the camera, answered
by the same model (its real answers on the noisy photos). The decisions table holds
people's answers for two model versions. The page must say what changed and since when
in its first lines, show the photos (every image loads), and put times on its axes.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from selenium.webdriver.common.by import By

from tests.browser import browser  # noqa: F401  (the fixture)
from tests.decisions_table import Traffic, create_decisions_table, put_items, simulate
from tests.training_job.monitor.conftest import START, Vehicles, capture_line, capture_lines, png
from training_job import model_code
from training_job.__main__ import main
from training_job.monitor.shifts import SHIFTS

pytestmark = pytest.mark.timeout(900)
PHOTOS_PER_HOUR = 100  # 36 s apart: four 30-minute windows (the test split holds 200)


@pytest.fixture
def report(
    local_aws: dict[str, str],
    unique_name: str,
    vehicles: Vehicles,
    model_dir: Path,
    predict,
    tmp_path: Path,
) -> Path:
    captures = tmp_path / "captures"
    captures.mkdir()
    clean = vehicles.test_images[:PHOTOS_PER_HOUR]
    (captures / "09-00-000-a.jsonl").write_bytes(
        b"".join(capture_lines(clean, predict(clean), START, step_s=36))
    )
    uploads = SHIFTS["night_noise"].uploads(
        vehicles.test_images[PHOTOS_PER_HOUR : 2 * PHOTOS_PER_HOUR], 2, np.random.default_rng(0)
    )
    imaging = model_code.imaging()
    noisy = np.stack([imaging.decode(body) for body, _ in uploads])
    later = START + timedelta(hours=1)
    (captures / "10-00-000-b.jsonl").write_bytes(
        b"".join(
            capture_line(body, [float(p) for p in row], later + timedelta(seconds=36 * i), kind)
            for i, ((body, kind), row) in enumerate(zip(uploads, predict(noisy), strict=True))
        )
    )
    baseline_images = tmp_path / "train"
    baseline_images.mkdir()
    for number, image in enumerate(vehicles.train_images[:60]):
        (baseline_images / f"train_{number:03d}.png").write_bytes(png(image))
    create_decisions_table(unique_name)
    put_items(unique_name, simulate(Traffic("1", photos=600, start=START, accuracy=0.97), 1))
    put_items(unique_name, simulate(Traffic("2", photos=600, start=later, accuracy=0.85), 2))

    out = tmp_path / "report"
    code = main(
        [
            "monitor",
            "report",
            "--captures",
            str(captures),
            "--model-dir",
            str(model_dir),
            "--every",
            "30m",
            "--permutations",
            "2000",
            "--baseline-images",
            str(baseline_images),
            "--decisions-table",
            unique_name,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out / "report.html"


FRACTIONAL = re.compile(r"^[−-]?\d+\.\d+$")


def test_the_report_reads_at_a_glance_in_a_browser(report: Path, browser, tmp_path: Path) -> None:  # noqa: F811
    summary = json.loads((report.parent / "summary.json").read_text())
    browser.get(report.as_uri())
    # The whole page in one screenshot: the window as tall as the page.
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 100, 16000))
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000

    # The verdict comes first and says what changed, since when, and how sure.
    verdict = browser.find_element(By.ID, "verdict").text
    first = browser.execute_script(
        "return document.querySelector('#verdict').getBoundingClientRect().top"
    )
    assert first < 200, "the verdict is not at the top of the page"
    assert "changed" in verdict
    assert "since the window 2026-11-24 10:00" in verdict, verdict
    assert "How sure:" in verdict and "Holm" in verdict
    assert "People's answers: accuracy past the gate" in verdict
    assert summary["verdict"][0] in verdict

    # People's answers per model version, with their intervals.
    table = browser.find_element(By.CSS_SELECTOR, "table.review").text
    assert "95% CI" in table and "all versions" in table
    for version in ("1", "2"):
        assert summary["review"][version]["accuracy_past_gate"]["n"] > 10

    # For each alerting window, its unusual and doubtful photos beside baseline photos,
    # every one decoded by the browser.
    windows = browser.find_elements(By.CSS_SELECTOR, "section.window")
    assert len(windows) == summary["alerting_windows"] >= 1
    for section in windows:
        for kind in ("unusual", "doubtful", "baseline"):
            images = section.find_elements(By.CSS_SELECTOR, f"figure.{kind} .grid img")
            assert images, f"no {kind} photos in {section.get_attribute('id')}"
            widths = [
                browser.execute_script("return arguments[0].naturalWidth", image)
                for image in images
            ]
            assert all(width > 0 for width in widths), (kind, widths)
    plots = browser.find_elements(By.CSS_SELECTOR, "img.plot")
    assert all(browser.execute_script("return arguments[0].naturalWidth", p) > 0 for p in plots)

    # Time on the axes, never fractional window numbers.
    for plot in plots:
        title = plot.get_attribute("alt")
        if title in ("Confidence histogram",):
            continue
        ticks = json.loads(plot.get_attribute("data-xticks") or "[]")
        assert ticks, title
        assert not any(FRACTIONAL.match(t) for t in ticks), (title, ticks)
        assert any(":" in t for t in ticks), (title, ticks)
