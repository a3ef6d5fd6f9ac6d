"""train.py as SageMaker runs it: a subprocess with the SM_* environment contract, on a
small staged sample of the real data, with a tiny network so each run takes seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import data
import hyperparameters
import model as model_lib
import numpy as np
import pytest
import torch
import train as train_module
from PIL import Image

from local_aws import training
from tests.training_job.code.conftest import CODE_DIR
from tests.training_job.code.train_helpers import TINY, run_train, sagemaker_env

METRIC_FIELDS = {
    "test_accuracy",
    "val_accuracy",
    "per_class",
    "confusion_matrix",
    "expected_calibration_error",
    "training_seconds",
    "seed",
    "git_commit",
    "epochs",
    "hyperparameters",
    "classes",
    "counts",
    "temperature",
    "confidence_gate",
}


@pytest.fixture(scope="module")
def trained(
    staged_sample: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("job")
    env = sagemaker_env(staged_sample, root)
    result = run_train(env, *TINY, "--seed", "3")
    return root, env, result


def test_a_short_run_writes_the_whole_model_directory(trained: Any) -> None:
    root, _, result = trained
    model_dir = root / "model"
    for name in ("model.pth", "model.json", "metrics.json"):
        assert (model_dir / name).is_file(), name
    for plot in ("confusion_matrix.png", "training_curves.png"):
        with Image.open(model_dir / "plots" / plot) as image:
            assert image.format == "PNG" and image.size[0] > 100
    served = {path.name for path in (model_dir / "code").iterdir()}
    assert {"model.py", "imaging.py"} <= served
    assert not served & {"train.py", "data.py", "metrics.py"}  # training-only modules
    # The baseline the monitor reads, recorded by what is on disk (once a constant True).
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["monitoring_baseline"] == ["baseline.json", "baseline_embeddings.npy"]
    for name in metrics["monitoring_baseline"]:
        assert (model_dir / name).stat().st_size > 0, name
    if (CODE_DIR / "inference.py").exists():
        assert "inference.py" in served
    assert "epoch 2/2 loss" in result.stdout and "val_acc" in result.stdout


def test_metrics_json_has_every_field_and_is_copied_to_the_output_dir(trained: Any) -> None:
    root, _, _ = trained
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert metrics.keys() >= METRIC_FIELDS
    assert metrics["classes"] == ["bicycle", "motorcycle"]
    assert metrics["counts"] == {"train": 48, "val": 12, "test": 20}
    assert metrics["seed"] == 3 and metrics["epochs"] == 2
    assert metrics["git_commit"] == "0123abc"
    assert metrics["hyperparameters"]["batch_size"] == 20
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (2, 2) and confusion.sum() == 20
    assert confusion.sum(axis=1).tolist() == [10, 10]  # rows are the true labels
    assert metrics["test_accuracy"] == pytest.approx(np.trace(confusion) / 20)
    for name in ("bicycle", "motorcycle"):
        assert set(metrics["per_class"][name]) >= {"precision", "recall", "f1"}
    assert 0 <= metrics["expected_calibration_error"] <= 1
    gate = metrics["confidence_gate"]
    assert gate["threshold"] == 0.93 and gate["share_passed"] == gate["passed"] / 20
    assert 0 <= gate["wrong_passed"] <= gate["passed"]
    assert metrics["training_seconds"] > 0
    config = json.loads((root / "model" / "model.json").read_text())
    assert config["temperature"] == metrics["temperature"]
    assert 0.02 <= metrics["temperature"] <= 5.0  # fit on validation, within its grid
    copied = root / "output" / "data" / "metrics.json"
    assert copied.read_text() == (root / "model" / "metrics.json").read_text()


def test_the_baseline_profiles_inputs_on_the_whole_train_split_answers_on_validation(
    trained: Any,
) -> None:
    root, _, _ = trained
    document = json.loads((root / "model" / "baseline.json").read_text())
    # The model's answers only from the 12 held-out images it was not fitted to; the input
    # statistics, which do not depend on the model, from all 60 staged training images.
    assert document["format_version"] == 3
    assert document["count"] == 12 and len(document["probabilities"]) == 12
    assert document["input_count"] == 60
    assert {len(values) for values in document["input_statistics"].values()} == {60}
    assert len(document["upload_bytes"]) == 60
    assert document["content_types"] == {"image/png": 60}
    embeddings = np.load(root / "model" / "baseline_embeddings.npy")
    assert embeddings.shape == (12, document["embedding_dim"])


def staged_test_images(channels: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    # train.py's reader
    split = data.read_split(
        channels["test"], channels["test_lst"], "test", ["bicycle", "motorcycle"]
    )
    return split.images, split.labels


def test_load_model_round_trip_reproduces_the_reported_test_metrics(
    trained: Any, staged_sample: dict[str, Path]
) -> None:
    root, _, _ = trained
    images, labels = staged_test_images(staged_sample)
    first, config = model_lib.load_model(root / "model")
    second, _ = model_lib.load_model(root / "model")
    with torch.no_grad():
        batch = model_lib.to_tensor(images, config)
        probabilities = first(batch).softmax(1)
        assert torch.equal(probabilities, second(batch).softmax(1))
    predicted = probabilities.argmax(1).numpy()
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert confusion.tolist() == metrics["confusion_matrix"]
    assert first.embed(batch).shape == (20, 2 * 16)  # two members' embeddings


@pytest.mark.parametrize(
    "extra", [[], ["--mixup", "0.4", "--tta-translate", "true"]], ids=["defaults", "mixup"]
)
def test_the_same_seed_gives_identical_weights_and_metrics_in_one_process_or_several(
    extra: list[str], staged_sample: dict[str, Path], tmp_path: Path
) -> None:
    runs = []
    # One CPU: the two members train one after the other in train.py's process; two
    # CPUs: each in its own process, with one thread.
    for name, cpus in (("one", "1"), ("two", "2")):
        env = sagemaker_env(staged_sample, tmp_path / name) | {"SM_NUM_CPUS": cpus}
        result = run_train(env, *TINY, *extra, "--seed", "7")
        assert "member 2/2 epoch 2/2" in result.stdout
        model_dir = tmp_path / name / "model"
        metrics = json.loads((model_dir / "metrics.json").read_text())
        state = torch.load(model_dir / "model.pth", weights_only=True)
        runs.append((metrics, state))
    (first_metrics, first_state), (second_metrics, second_state) = runs
    for volatile in ("training_seconds", "threads"):
        first_metrics.pop(volatile), second_metrics.pop(volatile)
    first_metrics["history"].pop("seconds"), second_metrics["history"].pop("seconds")
    assert first_metrics == second_metrics
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[key], second_state[key]) for key in first_state)
    config = json.loads((tmp_path / "one" / "model" / "model.json").read_text())
    assert config["tta_translate"] is ("--tta-translate" in extra)
    assert first_metrics["hyperparameters"]["mixup"] == (0.4 if extra else 0.0)


def child_pids(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(word) for word in children.read_text().split()} if children.exists() else set()


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_member_processes_end_when_train_py_is_killed(
    staged_sample: dict[str, Path], tmp_path: Path
) -> None:
    env = sagemaker_env(staged_sample, tmp_path) | {"SM_NUM_CPUS": "2"}
    arguments = [*TINY, "--epochs", "500"]
    process = subprocess.Popen(
        [sys.executable, str(CODE_DIR / "train.py"), *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the members are training once they report an epoch
            if line.startswith("member 2/2 epoch"):
                break
        members = child_pids(process.pid)
        assert members and all(is_running(pid) for pid in members)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 30
        while any(is_running(pid) for pid in members) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(is_running(pid) for pid in members)
    finally:
        process.kill()
        process.wait()


def test_a_missing_channel_fails_with_a_clear_message_and_writes_nothing(
    staged_sample: dict[str, Path], tmp_path: Path
) -> None:
    env = sagemaker_env(staged_sample, tmp_path)
    del env["SM_CHANNEL_TEST"]
    result = run_train(env, *TINY, check=False)
    assert result.returncode != 0
    assert "the test channel is missing" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model").exists()
    assert "test channel is missing" in (tmp_path / "output" / "failure").read_text()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "-1"], "--epochs: must be a positive integer"),
        (["--epochs", "zero"], "--epochs"),
        (["--batch-size", "0"], "--batch-size/--batch_size: must be a positive integer, got 0"),
        (
            ["--val-fraction", "1.5"],
            "--val-fraction/--val_fraction: must be strictly between 0 and 1",
        ),
        (["--lr", "nan"], "--lr: must be a finite number"),
        (["--classes", "bicycle"], "--classes: must be two or more distinct"),
        (["--classes", "bicycle,bicycle"], "--classes: must be two or more distinct"),
        (["--widths", "8,16"], "--widths: must be three"),
        (["--flip", "maybe"], "--flip: must be true or false"),
        (["--tta-translate", "sometimes"], "--tta-translate/--tta_translate: must be true or"),
        (["--mixup", "-0.5"], "--mixup: must be a finite number >= 0"),
        (["--mixup", "inf"], "--mixup: must be a finite number >= 0"),
        (["--no-such-option", "1"], "unrecognized arguments"),
    ],
)
def test_bad_hyperparameters_exit_non_zero_with_a_clear_message(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        train_module.main([*arguments, "--model-dir", str(tmp_path / "model")])
    assert exited.value.code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def channel_args(channels: dict[str, Path], model_dir: Path) -> list[str]:
    return [
        "--train",
        str(channels["train"]),
        "--train-lst",
        str(channels["train_lst"]),
        "--test",
        str(channels["test"]),
        "--test-lst",
        str(channels["test_lst"]),
        "--model-dir",
        str(model_dir),
    ]


def test_every_hyperparameter_is_an_option_whose_locations_default_to_sm_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_CHANNEL_TRAIN", "SM_CHANNEL_TEST"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    monkeypatch.delenv("SM_CHANNEL_TRAIN_LST", raising=False)
    hp = hyperparameters.Hyperparameters.from_args(hyperparameters.build_parser().parse_args([]))
    assert hp.model_dir == tmp_path / "sm_model_dir"
    assert hp.train == tmp_path / "sm_channel_train" and hp.train_lst is None
    # The defaults the parser gives are the dataclass's own: declared once.
    declared = hyperparameters.Hyperparameters()
    assert hp.recipe() == declared.recipe()
    assert "model_dir" not in hp.recipe() and hp.recipe()["widths"] == [32, 128, 128]
    help_text = hyperparameters.build_parser().format_help()
    for name in hp.recipe():
        assert f"--{name.replace('_', '-')}" in help_text, name


def test_underscore_spellings_are_accepted_as_sagemaker_passes_them() -> None:
    args = hyperparameters.build_parser().parse_args(
        ["--batch_size", "64", "--val_fraction", "0.2", "--weight_decay", "0.001"]
    )
    assert (args.batch_size, args.val_fraction, args.weight_decay) == (64, 0.2, 0.001)


def copy_channels(channels: dict[str, Path], root: Path) -> dict[str, Path]:
    import shutil

    copied = {}
    for name, path in channels.items():
        copied[name] = root / name
        shutil.copytree(path, copied[name])
    return copied


@pytest.mark.parametrize(
    ("extra", "edit", "message"),
    [
        (["--classes", "bicycle,motorcycle,scooter"], None, "class 'scooter' has no training"),
        (["--classes", "motorcycle,bicycle,car"], None, "class 'car' has no training"),
        ([], ("train", "0\t2\tbike.png\n"), "label 2 is outside the 2 classes"),
        ([], ("train", "0\tbike\tbike.png\n"), "row and label must be non-negative integers"),
        ([], ("train", "0\t1.5\tbike.png\n"), "row and label must be non-negative integers"),
        ([], ("train", "no tabs here\n"), "expected 3 tab-separated fields"),
        ([], ("train", "\n0\t0\tbike.png\n"), "blank line"),
        ([], ("train", "0\t0\t../../etc/passwd\n"), "unsafe or empty filename"),
        ([], ("train", "0\t0\tmissing.png\n"), "cannot read 'missing.png'"),
        ([], ("test", "0\t1\tgarbage.png\n"), "'garbage.png': not a readable image"),
        ([], ("test", ""), "lists no images"),
    ],
)
def test_data_that_does_not_match_the_hyperparameters_is_refused(
    extra: list[str],
    edit: tuple[str, str] | None,
    message: str,
    staged_sample: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    channels = copy_channels(staged_sample, tmp_path / "channels")
    (channels["test"] / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    if edit is not None:
        split, text = edit
        lst = channels[f"{split}_lst"] / f"{split}.lst"
        lst.write_text(lst.read_text() + text if text else "")
    model_dir = tmp_path / "model"
    code = train_module.main([*TINY, *extra, *channel_args(channels, model_dir)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not model_dir.exists()


def test_the_packed_model_serves_with_only_its_code_dir_on_the_path(
    trained: Any, tmp_path: Path
) -> None:
    # model.tar.gz as the training job uploads it, served by a fresh, isolated interpreter
    # (-I: no PYTHONPATH, no current directory) with code/ alone added, as SageMaker's
    # serving container adds it: contract/ must travel inside code/.
    root, _, _ = trained
    archive = training.pack(root / "model", tmp_path / "model.tar.gz")
    extracted = tmp_path / "extracted"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    # The model server travels in the serving image, not in each version's code/.
    assert not {"serve.py", "batching.py"} & {path.name for path in (extracted / "code").iterdir()}
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    script = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1] + '/code')\n"
        "import contract.images, inference\n"
        "assert contract.images.__file__.startswith(sys.argv[1]), contract.images.__file__\n"
        "model = inference.model_fn(sys.argv[1])\n"
        "data = inference.input_fn(open(sys.argv[2], 'rb').read(), 'image/png')\n"
        "print(inference.output_fn(inference.predict_fn(data, model), 'application/json')[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(extracted), str(image)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    probabilities = json.loads(result.stdout)
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1) < 1e-5
