"""The project image's entry point: `serve` runs the model server, `train` the training
program on SageMaker's `/opt/ml` directory (local mode runs the same program on a job
directory laid out the same way: `train --ml-root DIR`).

SageMaker's rules followed (Developer Guide, "Use Your Own Training Algorithms"):
  - "How Amazon SageMaker AI Runs Your Training Image": SageMaker runs the image as
    `docker run IMAGE train` (and, for hosting, `docker run IMAGE serve`).
  - "How Amazon SageMaker AI Provides Training Information": CreateTrainingJob's
    HyperParameters are in /opt/ml/input/config/hyperparameters.json, a JSON object whose
    values are strings; its channels are in input/config/inputdataconfig.json, and a File
    mode channel's data is under /opt/ml/input/data/<channel>/; TRAINING_JOB_NAME and the
    request's Environment are environment variables.
  - "How Amazon SageMaker AI Signals Algorithm Success and Failure": exit code 0 is
    Completed, anything else Failed; the text in /opt/ml/output/failure (its first 1024
    characters) becomes the job's FailureReason.
  - "How Amazon SageMaker AI Processes Training Output": /opt/ml/model is uploaded as
    model.tar.gz, /opt/ml/output/data as output.tar.gz.

Hyperparameters are JSON-encoded strings, as the SageMaker SDK encodes a framework
estimator's (the launcher, training_job/training/launch.py, sends them so;
`encode_hyperparameters`), and become train.py's `--name value` options. A bad job
(missing or malformed hyperparameters.json, an unknown hyperparameter, a missing or
unknown channel) is refused before anything is written, with the reason in output/failure
and exit status 2; a failure while training removes what it had written into model/ and
output/data/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

DEFAULT_ML_ROOT = Path("/opt/ml")
SERVER = Path(__file__).resolve().parent / "serve.py"
# SageMaker reaches a serving container from outside it: the server binds every interface
# in the image (serve.py binds 127.0.0.1 by default, for local mode).
SERVE_HOST = "0.0.0.0"
# The numbered user the server runs as, named by the image (the Dockerfile creates the
# user and sets this variable). The image starts as root, as SageMaker expects ("Use Your
# Own Inference Code": SageMaker "expects all containers to run with root users"): a
# training job writes /opt/ml/model and /opt/ml/output, volumes SageMaker mounts owned by
# root, which a non-root user cannot write. The server writes nothing, so `serve` drops to
# this user before it starts. Unset (a checkout), the server runs as whoever started it.
SERVER_UID_VARIABLE = "MODEL_SERVER_UID"
REQUIRED_CHANNELS = ("train", "train_lst", "test", "test_lst")
OPTIONAL_CHANNELS = ("reviewed", "reviewed_lst")
# CreateTrainingJob takes at most 100 hyperparameters of 256-character names and
# 2500-character values, and 20 channels: a config file far larger is not SageMaker's.
MAX_CONFIG_BYTES = 1 << 20
BAD_JOB_EXIT = 2
FAILED_EXIT = 1
FAILURE_LINES = 5  # of a traceback, in output/failure (the whole one goes to the log)


class JobError(Exception):
    """The job as given cannot run: the reason goes to output/failure."""


def encode_hyperparameters(hyperparameters: dict[str, Any]) -> dict[str, str]:
    """What the SageMaker SDK sends for a framework estimator: each value JSON-encoded."""
    return {str(name): json.dumps(value) for name, value in hyperparameters.items()}


def decode_hyperparameters(encoded: dict[str, str]) -> dict[str, Any]:
    """JSON values decoded, other text kept as it is (a value set by hand in the console)."""
    decoded: dict[str, Any] = {}
    for name, value in encoded.items():
        try:
            decoded[name] = json.loads(value)
        except json.JSONDecodeError:
            decoded[name] = value
    return decoded


class MlRoot:
    """SageMaker's `/opt/ml` layout, rooted anywhere."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "input" / "config"
        self.data = root / "input" / "data"
        self.model = root / "model"
        self.output = root / "output"
        self.output_data = self.output / "data"
        self.failure = self.output / "failure"


def read_config(path: Path) -> dict[str, Any]:
    """A config file's JSON object; JobError naming the file when it is not one."""
    name = f"input/config/{path.name}"
    if not path.is_file():
        raise JobError(f"{name} is missing")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise JobError(f"{name} is {path.stat().st_size} bytes: not SageMaker's")
    try:
        content = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise JobError(f"{name} is not JSON: {error}") from None
    if not isinstance(content, dict):
        raise JobError(f"{name} is not a JSON object")
    return content


def hyperparameter_arguments(encoded: dict[str, Any], known: set[str]) -> list[str]:
    """train.py's `--name value` options, one per hyperparameter, in name order; JobError
    for a value that is not a string, a name train.py does not take, or one given twice
    (`batch-size` and `batch_size` are one name)."""
    seen: dict[str, str] = {}
    for name, value in encoded.items():
        if not isinstance(value, str):
            raise JobError(f"hyperparameter {name!r}: its value is not a string")
        option = name.replace("-", "_")
        if option not in known:
            raise JobError(
                f"unknown hyperparameter {name!r}; train.py takes: "
                + ", ".join(sorted(item.replace("_", "-") for item in known))
            )
        if option in seen:
            raise JobError(f"hyperparameter {name!r} is given twice (also as {seen[option]!r})")
        seen[option] = name
    arguments: list[str] = []
    for name, value in sorted(decode_hyperparameters(encoded).items()):
        if not isinstance(value, str | int | float):  # bool is an int
            raise JobError(f"hyperparameter {name!r}: {value!r} is not a single value")
        # One `--name=value` word: a value starting with "-" stays a value.
        arguments.append(f"--{name.replace('_', '-')}={value}")
    return arguments


def channel_arguments(paths: MlRoot) -> list[str]:
    """Each channel of inputdataconfig.json as train.py's location option; JobError for a
    required channel the job lacks, an unknown one, or one whose data is not there."""
    channels = read_config(paths.config / "inputdataconfig.json")
    unknown = sorted(set(channels) - set(REQUIRED_CHANNELS) - set(OPTIONAL_CHANNELS))
    if unknown:
        raise JobError(
            f"unknown channel {unknown[0]!r}; channels: "
            + ", ".join(REQUIRED_CHANNELS + OPTIONAL_CHANNELS)
        )
    missing = [name for name in REQUIRED_CHANNELS if name not in channels]
    if missing:
        raise JobError(
            f"the job has no {missing[0]!r} channel (required: {', '.join(REQUIRED_CHANNELS)})"
        )
    arguments: list[str] = []
    for name in sorted(channels):
        directory = paths.data / name
        if not directory.is_dir():
            raise JobError(f"channel {name!r} has no data: input/data/{name}/ is missing")
        arguments.append(f"--{name.replace('_', '-')}={directory}")
    return arguments


def job_arguments(paths: MlRoot, known: set[str]) -> list[str]:
    hyperparameters = read_config(paths.config / "hyperparameters.json")
    return [
        *hyperparameter_arguments(hyperparameters, known),
        *channel_arguments(paths),
        "--model-dir",
        str(paths.model),
        "--output-data-dir",
        str(paths.output_data),
    ]


def parse_training_arguments(parser: argparse.ArgumentParser, arguments: list[str]) -> Any:
    """train.py's parser on `arguments`; its error message (a value it refuses) as JobError."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser.parse_args(arguments)
    except SystemExit:
        lines = errors.getvalue().strip().splitlines()
        raise JobError(lines[-1] if lines else "train.py refused its arguments") from None


def train(root: Path) -> int:
    """Run one training job on `root`; its exit status (0, or the failure's)."""
    paths = MlRoot(root)
    written_before = {
        directory: set(directory.iterdir()) if directory.is_dir() else set()
        for directory in (paths.model, paths.output_data)
    }
    try:
        # Imported here: `serve` needs none of it, and a failing import is a job failure.
        import train as training
        from data import TrainingError
        from hyperparameters import Hyperparameters, build_parser

        known = set(Hyperparameters().recipe())
        # The job directory is the one source of locations: a stray script-mode variable
        # (SM_CHANNEL_REVIEWED, say) must not become a default of train.py's parser.
        for name in [name for name in os.environ if name.startswith("SM_")]:
            del os.environ[name]
        try:
            parser = build_parser()
            arguments = job_arguments(paths, known)
            hyperparameters = Hyperparameters.from_args(parse_training_arguments(parser, arguments))
            training.run(hyperparameters)
        except (JobError, TrainingError) as error:
            return fail(paths, written_before, f"{type(error).__name__}: {error}", BAD_JOB_EXIT)
    except Exception:
        traceback.print_exc()
        last = traceback.format_exc().strip().splitlines()[-FAILURE_LINES:]
        return fail(paths, written_before, "\n".join(last), FAILED_EXIT)
    return 0


def fail(paths: MlRoot, written_before: dict[Path, set[Path]], reason: str, code: int) -> int:
    """Remove what this run wrote into model/ and output/data/, so nothing half-written
    of a failed job is ever packed as a model, then write the reason."""
    for directory, before in written_before.items():
        if not directory.is_dir():
            continue
        for path in set(directory.iterdir()) - before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    print(reason, file=sys.stderr, flush=True)
    paths.output.mkdir(parents=True, exist_ok=True)
    paths.failure.write_text(reason + "\n")
    return code


def drop_root(uid: int) -> None:
    """Run on as `uid` (group `uid`, no supplementary groups) when started as root; a
    process that is not root keeps its user. For good: root cannot be regained."""
    if os.geteuid() != 0:
        return
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def serve(arguments: list[str]) -> int:
    """Replace this process with the model server, as the server's own user, so
    SageMaker's SIGTERM reaches it and it holds no root."""
    named = os.environ.get(SERVER_UID_VARIABLE)
    if named is not None:
        if not named.isdigit() or int(named) == 0:
            print(
                f"{SERVER_UID_VARIABLE} must be a user number other than 0, not {named!r}",
                file=sys.stderr,
            )
            return BAD_JOB_EXIT
        drop_root(int(named))
    command = [sys.executable, str(SERVER), "--host", SERVE_HOST, "serve", *arguments]
    os.execv(sys.executable, command)
    return 1  # not reached: execv returns only by raising


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["serve"]:  # the rest are the server's own options
        return serve(arguments[1:])
    parser = argparse.ArgumentParser(
        prog="container.py",
        description="The project image's entry point: SageMaker runs it with `train` "
        "(training job) or `serve` (endpoint).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    training = commands.add_parser("train", help="train on an /opt/ml-style directory")
    training.add_argument(
        "--ml-root",
        type=Path,
        default=DEFAULT_ML_ROOT,
        help="the job directory (default: %(default)s, where SageMaker puts it)",
    )
    commands.add_parser("serve", help="run the model server (serve.py; its options follow)")
    args = parser.parse_args(arguments)
    return train(args.ml_root)


if __name__ == "__main__":
    sys.exit(main())
