"""model.py's evaluation-time behaviour: test-time augmentation and its config keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import model as model_lib
import pytest
import torch
from torch import nn

from tests.training_job.monitor.conftest import Vehicles

# Two cores shared with other work: one thread each is faster and fairer.
torch.set_num_threads(1)


def small_config(**overrides: Any) -> model_lib.ModelConfig:
    return model_lib.ModelConfig(
        ["bicycle", "motorcycle"], [0.5] * 3, [0.25] * 3, widths=[4, 8, 8], members=2, **overrides
    )


def random_net(config: model_lib.ModelConfig) -> model_lib.Net:
    torch.manual_seed(0)
    net = model_lib.build_model(config)
    net.init_whitening(torch.randn(8, 3, 32, 32))
    return net.eval()


def mean_logits(net: model_lib.Net, x: torch.Tensor) -> torch.Tensor:
    return net.member_logits(x).mean(0)


def test_translate_tta_weighs_the_image_half_and_each_shift_a_quarter() -> None:
    net = random_net(small_config(tta_translate=True, temperature=0.5))
    x = torch.randn(3, 3, 32, 32)
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, padded[..., :-2, :-2], padded[..., 2:, 2:]]
    flipped = [(mean_logits(net, v) + mean_logits(net, v.flip(-1))) / 2 for v in views]
    expected = (flipped[0] / 2 + flipped[1] / 4 + flipped[2] / 4) / 0.5
    with torch.no_grad():
        assert torch.allclose(net(x), expected, atol=1e-6)


def test_translate_tta_without_flip_uses_the_unmirrored_views_only() -> None:
    net = random_net(small_config(tta_translate=True, tta_flip=False))
    x = torch.randn(2, 3, 32, 32)
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    with torch.no_grad():
        expected = (
            mean_logits(net, x) / 2
            + mean_logits(net, padded[..., :-2, :-2]) / 4
            + mean_logits(net, padded[..., 2:, 2:]) / 4
        )
        assert torch.allclose(net(x), expected, atol=1e-6)


def test_training_mode_ignores_test_time_augmentation_and_temperature() -> None:
    net = random_net(small_config(tta_translate=True, temperature=0.1)).train()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(net(x), mean_logits(net, x))


def test_a_model_dir_written_before_translate_tta_existed_loads_without_it(
    tmp_path: Path,
) -> None:
    config = small_config()
    net = random_net(config)
    model_lib.save_model(net, config, tmp_path)
    written = json.loads((tmp_path / model_lib.CONFIG_FILE).read_text())
    del written["tta_translate"]
    (tmp_path / model_lib.CONFIG_FILE).write_text(json.dumps(written))
    loaded, _ = model_lib.load_model(tmp_path)
    assert loaded.tta_translate is False
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # load_model serves in channels-last layout: the same net in it answers the same.
        assert torch.equal(loaded(x), model_lib.to_fast_layout(net)(x))


@pytest.mark.parametrize("tta_translate", [False, True])
def test_save_and_load_keep_the_tta_setting_and_the_predictions(
    tta_translate: bool, tmp_path: Path
) -> None:
    net = random_net(small_config(tta_translate=tta_translate, temperature=0.7))
    model_lib.save_model(net, small_config(tta_translate=tta_translate, temperature=0.7), tmp_path)
    loaded, config = model_lib.load_model(tmp_path)
    assert config.tta_translate is tta_translate and loaded.tta_translate is tta_translate
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        # load_model serves in channels-last layout: the same net in it answers the same.
        assert torch.equal(loaded(x), model_lib.to_fast_layout(net)(x))


def test_predict_covers_every_image_whatever_its_batch_size() -> None:
    # predict once cut each slice batch_size long but stepped by 500: batch_size=2 over
    # five images returned two rows.
    net = random_net(small_config())
    x = torch.randn(5, 3, 32, 32)
    whole = model_lib.predict(net, x)
    in_pairs = model_lib.predict(net, x, batch_size=2)
    assert in_pairs.shape == whole.shape == (5, 2)
    assert torch.allclose(in_pairs, whole, atol=1e-6)


def test_a_model_json_of_another_architecture_is_refused(tmp_path: Path) -> None:
    config = small_config()
    model_lib.save_model(random_net(config), config, tmp_path)
    written = json.loads((tmp_path / model_lib.CONFIG_FILE).read_text())
    (tmp_path / model_lib.CONFIG_FILE).write_text(json.dumps({**written, "architecture": "vit"}))
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        model_lib.load_model(tmp_path)


def test_a_loaded_model_is_in_the_fast_layout_and_answers_as_the_saved_one(
    tmp_path: Path,
) -> None:
    config = small_config()
    net = random_net(config)
    model_lib.save_model(net, config, tmp_path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        saved = net(x)
        loaded, _ = model_lib.load_model(tmp_path)
        answered = loaded(x)
    conv = loaded.members[0].whiten.weight  # type: ignore[union-attr]
    assert conv.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(answered, saved, rtol=0, atol=1e-6)


def with_config(model_dir: Path, tmp_path: Path, **changes: Any) -> Path:
    """A copy of a model directory (its trained weights) whose model.json says `changes`."""
    copy = tmp_path / "model"
    copy.mkdir()
    (copy / model_lib.WEIGHTS_FILE).write_bytes((model_dir / model_lib.WEIGHTS_FILE).read_bytes())
    written = json.loads((model_dir / model_lib.CONFIG_FILE).read_text())
    (copy / model_lib.CONFIG_FILE).write_text(json.dumps({**written, **changes}))
    return copy


@pytest.mark.parametrize(
    "changes",
    [
        {},  # as trained: three members, flip TTA
        {"temperature": 0.45},
        {"tta_translate": True},
        {"tta_flip": False},
    ],
)
def test_the_served_network_answers_as_the_ensemble_on_the_real_test_images(
    model_dir: Path, vehicles: Vehicles, tmp_path: Path, changes: dict[str, Any]
) -> None:
    """The endpoint's folded network (members' convs grouped, BatchNorms folded in, one
    head) gives the trained ensemble's probabilities on the 200 test photos, so the same
    classes and the same side of the 0.93 gate: in passes of two photos (its grouped
    convolutions) and of all 200 (the members apart)."""
    net, config = model_lib.load_model(with_config(model_dir, tmp_path, **changes))
    served = model_lib.for_serving(net)
    assert isinstance(served, model_lib.ServingNet)
    images = model_lib.to_tensor(vehicles.test_images, config)
    assert 2 * 2 <= model_lib.GROUPED_MAX_VIEWS < len(images)
    with torch.inference_mode():
        expected = net(images).softmax(1)
        whole = served(images).softmax(1)
        in_pairs = torch.cat([served(pair) for pair in images.split(2)]).softmax(1)
    for answered in (whole, in_pairs):
        torch.testing.assert_close(answered, expected, rtol=0, atol=1e-5)
        assert torch.equal(answered.argmax(1), expected.argmax(1))
        gate = 0.93
        assert torch.equal(answered.max(1).values >= gate, expected.max(1).values >= gate)


def test_a_net_whose_pooled_batchnorm_flips_signs_is_served_as_it_is(
    model_dir: Path, vehicles: Vehicles
) -> None:
    """A BatchNorm after a max pool folds into the conv before the pool only when it
    scales by a positive factor (max(-a, -b) is not -max(a, b)); a net with a negative
    scale there is served unfolded, with its own answers."""
    net, config = model_lib.load_model(model_dir)
    norm = net.members[1].features[2].norm1  # type: ignore[index]
    with torch.no_grad():
        norm.weight[0] = -1.0
    served = model_lib.for_serving(net)
    assert served is net
    images = model_lib.to_tensor(vehicles.test_images[:8], config)
    with torch.inference_mode():
        assert torch.equal(served(images), net(images))
