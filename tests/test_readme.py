"""The README's commands match the code: a README that drifts from the code fails here.

Every `python -m training_job ...` / `python -m local_aws ...` line is parsed by the real
CLI (so a renamed or removed option fails), every `make` target exists, every `sls`
function, state machine and event file it names exists. The demo test runs the same
commands end to end.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from local_aws.__main__ import main as local_aws_main
from training_job.__main__ import COMMANDS, build_parser

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text()
EXAMPLE_VALUES = {
    "$BUCKET": "scones-unlimited-123456789012",
    "$ROLE": "arn:aws:iam::123456789012:role/SconesSageMakerRole",
    "$STAGE": "dev",
}


def commands() -> list[str]:
    """Each command in the README's bash blocks, continuation lines joined."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                for name, value in EXAMPLE_VALUES.items():
                    line = line.replace(name, value)
                found.append(line)
    return found


def arguments(command: str, program: str) -> list[str]:
    words = shlex.split(command)
    return words[words.index(program) + 1 :]


TRAINING_JOB = [c for c in commands() if "-m training_job" in c]
SLS = [c for c in commands() if c.startswith("npx sls")]
MAKE = [c for c in commands() if c.startswith("make")]


def test_the_readme_opens_with_the_two_commands() -> None:
    assert commands()[:2] == ["make demo", "make test"]


@pytest.mark.parametrize("command", TRAINING_JOB)
def test_each_training_job_command_parses(command: str) -> None:
    args = arguments(command, "training_job")
    assert args[0] in COMMANDS
    build_parser(args[0]).parse_args(args)  # argparse exits (fails the test) on drift


@pytest.mark.parametrize("command", MAKE)
def test_each_make_target_exists(command: str) -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    target = shlex.split(command)[1]
    assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.MULTILINE), target


@pytest.mark.parametrize("command", SLS)
def test_each_sls_command_names_what_serverless_yml_declares(command: str) -> None:
    service = yaml.safe_load((REPO_ROOT / "serverless.yml").read_text())
    words = shlex.split(command)
    if "-f" in words:
        assert words[words.index("-f") + 1] in service["functions"]
    if "--name" in words:
        assert words[words.index("--name") + 1] in service["stepFunctions"]["stateMachines"]
    if "--path" in words:
        assert (REPO_ROOT / words[words.index("--path") + 1]).is_file()
    assert words[2] in {"deploy", "invoke", "remove", "package"}


def test_local_aws_help_lists_the_commands_the_readme_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        local_aws_main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for name in ("up", "down", "serve", "demo"):
        assert name in help_text
