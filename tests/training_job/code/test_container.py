"""container.py, the image's training program, on a real job directory laid out as
SageMaker lays out /opt/ml (Developer Guide, "How Amazon SageMaker AI Provides Training
Information": CreateTrainingJob's HyperParameters in input/config/hyperparameters.json, a
JSON object of string values; its channels in input/config/inputdataconfig.json and each
File-mode channel's data in input/data/<channel>/). "How Amazon SageMaker AI Signals
Algorithm Success and Failure": exit code 0 is Completed, non-zero Failed, and the
description written to /opt/ml/output/failure is the job's FailureReason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import container
import pytest

from tests.training_job.code.conftest import CODE_DIR

# Small enough to train in seconds; JSON-encoded as the launcher sends them.
TINY = {
    "epochs": 2,
    "batch-size": 20,
    "widths": "8,16,16",
    "members": 2,
    "val-fraction": 0.2,
    "seed": 3,
    "classes": "bicycle,motorcycle",
}
CHANNELS = ("train", "train_lst", "test", "test_lst")


def lay_out_job(
    root: Path, channels: dict[str, Path], hyperparameters: dict[str, object] = TINY
) -> Path:
    """/opt/ml as SageMaker fills it before it runs `train`, with a file already in model/
    (nothing of a refused job may join it, and nothing may remove it)."""
    for name in CHANNELS:
        shutil.copytree(channels[name], root / "input" / "data" / name)
    config = root / "input" / "config"
    config.mkdir(parents=True)
    encoded = container.encode_hyperparameters(hyperparameters)
    (config / "hyperparameters.json").write_text(json.dumps(encoded))
    data_config = {name: {"TrainingInputMode": "File"} for name in CHANNELS}
    (config / "inputdataconfig.json").write_text(json.dumps(data_config))
    (root / "model").mkdir()
    (root / "model" / "earlier.txt").write_text("kept")
    (root / "output" / "data").mkdir(parents=True)
    return root


def run_program(root: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`container.py train --ml-root ROOT`, with no SM_* variable: the program needs none."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SM_")}
    # contract/ is beside the program in the image (/opt/program); here, at the root.
    env.update(PYTHONPATH=str(CODE_DIR.parents[1]), SCONES_GIT_COMMIT="0123abc", **extra_env)
    return subprocess.run(
        [sys.executable, str(CODE_DIR / "container.py"), "train", "--ml-root", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_on_a_job_directory_writes_the_model_and_the_output_data(
    staged_sample: dict[str, Path], tmp_path: Path
) -> None:
    root = lay_out_job(tmp_path, staged_sample)
    # A script-mode variable left in the environment is no channel of the job's.
    stray = tmp_path / "stray"
    stray.mkdir()
    result = run_program(root, SM_CHANNEL_REVIEWED=str(stray), SM_MODEL_DIR=str(stray))
    assert result.returncode == 0, result.stderr
    model = root / "model"
    assert {"model.pth", "model.json", "metrics.json", "code", "earlier.txt"} <= {
        path.name for path in model.iterdir()
    }
    metrics = json.loads((model / "metrics.json").read_text())
    assert json.loads((root / "output" / "data" / "metrics.json").read_text()) == metrics
    # Every hyperparameter reached train.py, decoded from its JSON string.
    recipe = metrics["hyperparameters"]
    assert (recipe["epochs"], recipe["batch_size"], recipe["widths"]) == (2, 20, [8, 16, 16])
    assert (recipe["members"], recipe["val_fraction"], recipe["seed"]) == (2, 0.2, 3)
    assert metrics["counts"]["test"] == 20 and metrics["git_commit"] == "0123abc"
    assert metrics["reviewed"] is None and list(stray.iterdir()) == []
    assert not (root / "output" / "failure").exists()
    # The image's entry point is not served with a model version.
    assert not (model / "code" / "container.py").exists()


def write_config(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / "input" / "config" / name).write_text(text)


def hyperparameters(encoded: dict[str, object]) -> Callable[[Path], None]:
    return write_config("hyperparameters.json", json.dumps(encoded))


def channels(*names: str) -> Callable[[Path], None]:
    data_config = {name: {"TrainingInputMode": "File"} for name in names}
    return write_config("inputdataconfig.json", json.dumps(data_config))


def remove(relative: str) -> Callable[[Path], None]:
    def act(root: Path) -> None:
        path = root / relative
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return act


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (remove("input/config/hyperparameters.json"), "hyperparameters.json is missing"),
        (write_config("hyperparameters.json", ""), "hyperparameters.json is not JSON"),
        (write_config("hyperparameters.json", "{'epochs': "), "hyperparameters.json is not JSON"),
        (write_config("hyperparameters.json", '["epochs"]'), "is not a JSON object"),
        (hyperparameters({"epochs": 2}), "hyperparameter 'epochs': its value is not a string"),
        (hyperparameters({"epoch": "2"}), "unknown hyperparameter 'epoch'; train.py takes:"),
        # A location is the job's, never a hyperparameter: no writing the model elsewhere.
        (hyperparameters({"model-dir": '"/tmp"'}), "unknown hyperparameter 'model-dir'"),
        (hyperparameters({"--epochs": "2"}), "unknown hyperparameter '--epochs'"),
        (hyperparameters({"lr": "0.1", "batch-size": "5", "batch_size": "6"}), "given twice"),
        (hyperparameters({"widths": "[8, 16, 16]"}), "'widths': [8, 16, 16] is not a single"),
        # One `--name=value` word each: a value cannot smuggle in an option.
        (
            hyperparameters({"epochs": '"2 --model-dir=/tmp"'}),
            "argument --epochs: invalid positive_int value: '2 --model-dir=/tmp'",
        ),
        (hyperparameters({"translate": "99"}), "--translate must be 0 to 8 pixels, got 99"),
        (remove("input/config/inputdataconfig.json"), "inputdataconfig.json is missing"),
        (channels("train", "train_lst", "test_lst"), "the job has no 'test' channel"),
        (channels(*CHANNELS, "validation"), "unknown channel 'validation'"),
        (remove("input/data/test_lst"), "channel 'test_lst' has no data: input/data/test_lst/"),
    ],
)
def test_a_job_it_cannot_run_fails_with_its_reason_and_writes_nothing(
    staged_sample: dict[str, Path],
    tmp_path: Path,
    spoil: Callable[[Path], None],
    reason: str,
) -> None:
    root = lay_out_job(tmp_path, staged_sample)
    spoil(root)
    result = run_program(root)
    assert result.returncode == container.BAD_JOB_EXIT, result.stderr
    failure = (root / "output" / "failure").read_text()
    assert reason in failure, failure
    assert "Traceback" not in failure and len(failure) < 1024  # FailureReason's length
    assert sorted(path.name for path in (root / "model").iterdir()) == ["earlier.txt"]
    assert list((root / "output" / "data").iterdir()) == []


def test_a_failure_after_training_removes_what_it_wrote_and_reports_the_last_lines(
    staged_sample: dict[str, Path], tmp_path: Path
) -> None:
    """The model is written, then output/data cannot be (it is a file): SageMaker uploads
    nothing of a failed job, and the job directory keeps nothing of it either."""
    root = lay_out_job(tmp_path, staged_sample)
    (root / "output" / "data").rmdir()
    (root / "output" / "data").write_text("in the way")
    result = run_program(root)
    assert result.returncode == container.FAILED_EXIT
    assert "Traceback" in result.stderr  # the whole traceback is in the job's log
    failure = (root / "output" / "failure").read_text()
    assert "FileExistsError" in failure
    assert len(failure.strip().splitlines()) <= container.FAILURE_LINES
    assert sorted(path.name for path in (root / "model").iterdir()) == ["earlier.txt"]


def test_hyperparameters_round_trip_through_their_json_encoding() -> None:
    given = {"epochs": 3, "lr": 0.1, "flip": False, "classes": "bicycle,motorcycle"}
    encoded = container.encode_hyperparameters(given)
    assert encoded == {
        "epochs": "3",
        "lr": "0.1",
        "flip": "false",
        "classes": '"bicycle,motorcycle"',
    }
    assert container.decode_hyperparameters(encoded) == given
    # A value typed by hand, not JSON, is kept as text.
    assert container.decode_hyperparameters({"classes": "bicycle,motorcycle"}) == {
        "classes": "bicycle,motorcycle"
    }


def test_an_unknown_command_is_refused() -> None:
    with pytest.raises(SystemExit) as refused:
        container.main(["fit"])
    assert refused.value.code == 2


def in_a_child(action: Callable[[], object]) -> object:
    """What `action` returns (JSON), run in a forked child: ids changed there stay there."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports through the pipe, then exits at once
        os.close(read)
        try:
            os.write(write, json.dumps(action()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as reader:
        report = json.loads(reader.read())
    os.waitpid(child, 0)
    return report


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root")
def test_serve_drops_root_for_good_before_the_server_starts() -> None:
    """The image starts as root (SageMaker's expectation; a training job writes root-owned
    /opt/ml volumes); `serve` runs the server as the numbered user instead. A forked
    child drops as `serve` does and reports its ids, and that it cannot become root again."""

    def drop() -> list[object]:
        container.drop_root(10001)
        try:
            os.setuid(0)
            regained = "yes"
        except PermissionError:
            regained = "no"
        return [*os.getresuid(), *os.getresgid(), len(os.getgroups()), regained]

    assert in_a_child(drop) == [10001] * 6 + [0, "no"]


def test_drop_root_leaves_a_process_that_is_not_root_as_it_is() -> None:
    """Local mode and CI may run as an ordinary user: nothing to drop, nothing refused."""

    def drop_as_another_user() -> list[int]:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(20002)
            os.setuid(20002)
        container.drop_root(10001)
        return list(os.getresuid())

    expected = 20002 if os.geteuid() == 0 else os.getuid()
    assert in_a_child(drop_as_another_user) == [expected] * 3


@pytest.mark.parametrize("named", ["0", "", "model-server", "-1", "10001x"])
def test_serve_refuses_a_server_user_that_is_not_a_number_other_than_root(named: str) -> None:
    """MODEL_SERVER_UID names the server's user; root, a name or garbage is refused with
    status 2 before anything runs (never a server left running as root)."""
    result = subprocess.run(
        [sys.executable, str(CODE_DIR / "container.py"), "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "MODEL_SERVER_UID": named},
        timeout=60,
    )
    assert result.returncode == 2
    assert "MODEL_SERVER_UID must be a user number other than 0" in result.stderr
    assert "usage" not in result.stdout
