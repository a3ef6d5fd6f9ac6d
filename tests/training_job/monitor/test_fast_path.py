"""What makes a 100,000-record report fast must not change what it concludes: one ensemble
member's embedding is the baseline's matching columns, windows analysed in a batch get the
verdicts they get one at a time, and early-stopped permutation p-values stay valid."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from tests.training_job.monitor.conftest import Vehicles, png
from tests.training_job.monitor.drift_helpers import baseline, window
from training_job import model_code
from training_job.__main__ import main
from training_job.monitor.baseline import Baseline
from training_job.monitor.captures import CapturedInference, CaptureSourceError
from training_job.monitor.detectors import DriftMonitor, EmbeddingDetector, Window
from training_job.monitor.embedding import Embedder
from training_job.monitor.report import WindowAnalyzer, _ahead


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> tuple[torch.nn.Module, dict]:
    torch.set_num_threads(1)
    net, config = model_code.model().load_model(model_dir)
    return net, config


def test_one_member_embeds_as_the_baselines_first_columns(
    loaded: tuple[torch.nn.Module, dict], model_dir: Path, vehicles: Vehicles
) -> None:
    net, config = loaded
    images = vehicles.train_images[800:]
    stored = Baseline.from_dir(model_dir).embeddings  # written by the full ensemble pass
    one = Embedder(net, config, members=1)
    assert one.full_dimensions == stored.shape[1] == 3 * one.dimensions
    np.testing.assert_allclose(one(images), stored[:, : one.dimensions], rtol=1e-4, atol=1e-4)
    every = Embedder(net, config, members=99)  # beyond the ensemble: all of it
    assert every.dimensions == stored.shape[1]
    np.testing.assert_allclose(every(images), stored, rtol=1e-4, atol=1e-4)
    assert one(images[:0]).shape == (0, one.dimensions)
    with pytest.raises(ValueError, match="at least 1"):
        Embedder(net, config, members=0)


def test_a_baseline_from_another_model_is_refused(
    loaded: tuple[torch.nn.Module, dict], model_dir: Path
) -> None:
    net, config = loaded
    reference = Baseline.from_dir(model_dir)
    reference.embeddings = reference.embeddings[:, :5]
    embedder = Embedder(net, config)
    with pytest.raises(ValueError, match="another model"):
        WindowAnalyzer(reference, embedder, DriftMonitor().fit(reference), 64)
    with pytest.raises(ValueError, match="another model"):
        EmbeddingDetector(dimensions=6).fit(reference)


def _records(images: np.ndarray, probabilities: np.ndarray) -> list[CapturedInference]:
    return [
        CapturedInference(
            "key", None, None, None, "image/png", png(image), tuple(float(p) for p in row)
        )
        for image, row in zip(images, probabilities, strict=True)
    ]


def test_windows_analysed_together_get_the_verdicts_they_get_alone(
    loaded: tuple[torch.nn.Module, dict], model_dir: Path, vehicles: Vehicles, predict
) -> None:
    net, config = loaded
    reference = Baseline.from_dir(model_dir)
    images = vehicles.test_images[:150]
    records = _records(images, predict(images))
    broken = CapturedInference("key", None, None, None, "image/png", b"not an image", (0.5, 0.5))
    windows = [
        (0, records[:60], 60),
        (1, [broken, broken], 2),  # nothing usable between two usable windows
        (2, [*records[60:100], broken], 41),
        (3, records[100:], 50),
    ]

    def analyzer() -> WindowAnalyzer:
        embedder = Embedder(net, config)
        monitor = DriftMonitor(permutations=300, embedding_dimensions=embedder.dimensions)
        return WindowAnalyzer(reference, embedder, monitor.fit(reference), 32, seed=7)

    alone = analyzer()
    one_by_one = [alone.analyze(*w) for w in windows]
    together = analyzer().analyze_many(windows)
    assert [r.index for r in together] == [0, 1, 2, 3]
    assert [r.used for r in together] == [60, 0, 40, 50]
    assert together[2].not_image == 1 and together[1].findings == []
    for first, second in zip(one_by_one, together, strict=True):
        assert first.statistic_quantiles == second.statistic_quantiles
        assert [f.test for f in first.findings] == [f.test for f in second.findings]
        for a, b in zip(first.findings, second.findings, strict=True):
            assert a.p_value == pytest.approx(b.p_value, rel=1e-6, abs=1e-9), a.test
            assert a.alert == b.alert
    assert {f.test for f in together[0].findings} >= {"mmd", "brightness", "class_mix"}


def test_early_stopping_keeps_drift_p_values_and_shortens_quiet_ones() -> None:
    rng = np.random.default_rng(11)
    reference = baseline(rng)
    drifted, quiet = window(rng, shift=0.6), window(rng)
    full = EmbeddingDetector(permutations=2000, stop_after=None).fit(reference)
    early = EmbeddingDetector(permutations=2000, stop_after=20).fit(reference)
    # Drift: fewer than 20 relabellings ever reach the statistic, so nothing stops early.
    assert early.test(drifted)[0].p_value == full.test(drifted)[0].p_value == 1 / 2001
    # No drift: stopped at the 20th exceedance after L relabellings, p = 20 / L exactly.
    p_quiet = early.test(quiet)[0].p_value
    relabellings = 20 / p_quiet
    assert relabellings == pytest.approx(round(relabellings)) and relabellings < 2000
    assert abs(p_quiet - full.test(quiet)[0].p_value) < 0.25
    with pytest.raises(ValueError, match="stop_after"):
        EmbeddingDetector(stop_after=0)


def test_early_stopped_p_values_stay_uniform_without_drift() -> None:
    p_values = []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        detector = EmbeddingDetector(permutations=500, seed=seed).fit(baseline(rng))
        p_values.append(detector.test(window(rng, n=64))[0].p_value)
    # Under no drift P(p <= x) <= x; 40 draws below 0.1 number 4 on average.
    assert sum(p <= 0.1 for p in p_values) <= 10
    assert 0.25 < float(np.median(p_values)) < 0.75


def test_only_the_baselines_first_columns_are_compared() -> None:
    rng = np.random.default_rng(12)
    reference = baseline(rng)  # 8-dimensional synthetic embeddings
    reference.embeddings = reference.embeddings.copy()
    reference.embeddings[:, 4:] += 3.0  # the later columns differ from every window's
    current = window(rng)
    assert current.embeddings is not None
    everything = EmbeddingDetector(permutations=500).fit(reference)
    first_four = EmbeddingDetector(permutations=500, dimensions=4).fit(reference)
    assert everything.test(current)[0].p_value < 0.01
    sliced = Window({}, np.zeros(0), Counter(), current.probabilities, current.embeddings[:, :4])
    assert first_four.test(sliced)[0].p_value > 0.01
    with pytest.raises(ValueError, match="another model"):
        first_four.test(current)  # 8 columns for a 4-dimensional comparison


@pytest.mark.parametrize(
    "arguments",
    [
        ["--threads", "0"],
        ["--threads", "many"],
        ["--embedding-members", "0"],
        ["--embedding-members", "-1"],
        ["--embedding-sample", "0"],
        ["--embedding-sample", "99999999"],
    ],
)
def test_speed_options_refuse_nonsense(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", "report", "--captures", "s3://b/p/", "--out", "x", *arguments])
    assert exit_info.value.code == 2


def test_help_names_the_speed_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["monitor", "report", "--help"])
    text = capsys.readouterr().out
    for option in ("--embedding-sample", "--embedding-members", "--threads", "--permutations"):
        assert option in text


def test_work_ahead_hands_over_items_and_errors_in_order() -> None:
    assert list(_ahead(iter(range(10)))) == list(range(10))

    def failing() -> Iterator[int]:
        yield 1
        raise CaptureSourceError("no such bucket: gone")

    received = []
    with pytest.raises(CaptureSourceError, match="no such bucket"):
        for item in _ahead(failing()):
            received.append(item)
    assert received == [1]

    produced: list[int] = []

    def endless() -> Iterator[int]:
        while True:
            produced.append(len(produced))
            yield produced[-1]

    ahead = cast(Generator[int, None, None], _ahead(endless(), depth=2))
    assert next(ahead) == 0
    ahead.close()  # joins the thread: nothing is produced after this
    stopped_at = len(produced)
    assert stopped_at <= 4
    assert list(ahead) == [] and len(produced) == stopped_at


def test_the_unfamiliar_share_is_an_output_statistic_of_each_window(
    loaded: tuple[torch.nn.Module, dict], model_dir: Path, vehicles: Vehicles, predict
) -> None:
    """Issue 23: a window of photos that are neither class (numpy noise and flat colour)
    has a larger unfamiliar share than a window of vehicles; a version without familiarity
    statistics has none (unknown, not 0)."""
    from tests import non_vehicle_photos

    net, config = loaded
    reference = Baseline.from_dir(model_dir)
    familiarity = model_code.familiarity().fit(
        net,
        config,
        vehicles.train_images[:800],
        vehicles.train_labels[:800],
        vehicles.train_images[800:],
    )
    photos = non_vehicle_photos.procedural(120, seed=4)
    families = list(non_vehicle_photos.PROCEDURAL_FAMILIES)
    others = photos[[i for i in range(120) if families[i % 10] in ("noise", "flat")]]
    vehicle_records = _records(vehicles.test_images[:60], predict(vehicles.test_images[:60]))
    other_records = _records(others, predict(others))

    def analyzer(with_familiarity: bool) -> WindowAnalyzer:
        embedder = Embedder(net, config)
        monitor = DriftMonitor(permutations=50, embedding_dimensions=embedder.dimensions)
        return WindowAnalyzer(
            reference,
            embedder,
            monitor.fit(reference),
            64,
            familiarity=familiarity if with_familiarity else None,
        )

    ordinary, odd = analyzer(True).analyze_many(
        [(0, vehicle_records, 60), (1, other_records, len(other_records))]
    )
    assert ordinary.unfamiliar_rate is not None and ordinary.unfamiliar_rate <= 0.15
    assert odd.unfamiliar_rate is not None and odd.unfamiliar_rate >= 0.8
    assert odd.as_dict()["unfamiliar_rate"] == odd.unfamiliar_rate
    unknown = analyzer(False).analyze(0, vehicle_records, 60)
    assert unknown.unfamiliar_rate is None
