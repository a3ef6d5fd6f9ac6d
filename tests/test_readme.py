"""The README's commands match the code: a README that drifts from the code fails here.

Every `python -m training_job ...` / `python -m local_aws ...` line is parsed by the real
CLI (so a renamed or removed option fails), every `make` target exists, every `sls`
function, state machine and event file it names exists. The demo test runs the same
commands end to end.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract.decisions import variant_for_version
from local_aws import iam
from local_aws.__main__ import main as local_aws_main
from training_job.__main__ import COMMANDS, build_parser
from training_job.demo.__main__ import main as demo_main
from training_job.modes import refuse_other_modes
from training_job.serving.deployment import DEFAULT_ENDPOINT_NAME

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text()
EXAMPLE_VALUES = {
    "$BUCKET": "scones-unlimited-123456789012",
    "$ROLE": "arn:aws:iam::123456789012:role/SconesSageMakerRole",
    "$STAGE": "dev",
}


def commands(text: str = README) -> list[str]:
    """Each command in the bash blocks of `text`, continuation lines joined."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
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


OPERATIONS = (REPO_ROOT / "docs" / "operations.md").read_text()
TRAINING_JOB = [c for c in commands() + commands(OPERATIONS) if "-m training_job" in c]
SLS = [c for c in commands() if c.startswith("npx sls")]
MAKE = [c for c in commands() if c.startswith("make")]


def test_the_readme_opens_with_the_two_commands() -> None:
    assert commands()[:2] == ["make demo", "make test"]


@pytest.mark.parametrize("command", TRAINING_JOB)
def test_each_training_job_command_parses(command: str) -> None:
    args = arguments(command, "training_job")
    assert args[0] in COMMANDS
    parsed = build_parser(args[0]).parse_args(args)  # argparse exits (fails the test) on drift
    if hasattr(parsed, "mode_options"):  # train, deploy: no option of the other --mode
        refuse_other_modes(parsed, parsed.mode_options)


def makefile_has_target(command: str) -> bool:
    makefile = (REPO_ROOT / "Makefile").read_text()
    target = shlex.split(command)[1]
    return bool(re.search(rf"^{re.escape(target)}:", makefile, flags=re.MULTILINE))


@pytest.mark.parametrize("command", MAKE)
def test_each_make_target_exists(command: str) -> None:
    assert makefile_has_target(command), command


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
    if "--data" in words:
        # An event built inline has the shape of the sample event, for the user's bucket.
        event = json.loads(words[words.index("--data") + 1])
        sample = json.loads((REPO_ROOT / "events" / "workflow.json").read_text())
        assert set(event) == set(sample)
        assert event["s3_bucket"] == EXAMPLE_VALUES["$BUCKET"]
    assert words[2] in {"deploy", "invoke", "remove", "package"}


AWS_PATH = README[README.index("## The AWS path") : README.index("## Commands")]


def test_the_aws_path_sets_the_region_once_and_uses_no_local_sample_event() -> None:
    assert len(re.findall(r"^export AWS_REGION=", AWS_PATH, flags=re.MULTILINE)) == 1
    # Every command reads AWS_REGION: none names a region of its own.
    assert not [c for c in commands() if "--region" in c]
    # The sample events name the local bucket; the AWS path builds its own.
    assert "events/workflow.json" not in AWS_PATH


def test_the_aws_path_deploys_and_deletes_the_endpoint_for_its_stage() -> None:
    deploys = [c for c in TRAINING_JOB if c.split("training_job ")[1].startswith("deploy")]
    aws_deploys = [c for c in deploys if "--mode sagemaker" in c]
    assert aws_deploys
    for command in aws_deploys:
        words = shlex.split(command)
        assert words[words.index("--stage") + 1] == EXAMPLE_VALUES["$STAGE"], command


def filled_policy(path: str) -> dict[str, Any]:
    """A policy file from docs/iam/ with its placeholders filled as the README's `fill` does."""
    text = (REPO_ROOT / path).read_text()
    for placeholder, value in {
        "ACCOUNT_ID": "123456789012",
        "REGION": "eu-west-1",
        "BUCKET": EXAMPLE_VALUES["$BUCKET"],
    }.items():
        text = text.replace(placeholder, value)
    assert not re.search(r"\b[A-Z]{2,}_?[A-Z]*\b", text.replace("Version", "")), text
    policy: dict[str, Any] = json.loads(text)
    return policy


IAM_FILES = sorted(set(re.findall(r"docs/iam/[\w.-]+\.json", README)))


def test_the_readme_names_the_role_files_and_they_exist() -> None:
    assert IAM_FILES == [
        "docs/iam/model-registry-policy.json",
        "docs/iam/sagemaker-execution-policy.json",
        "docs/iam/sagemaker-trust-policy.json",
    ]
    for path in IAM_FILES:
        assert (REPO_ROOT / path).is_file(), path
        assert f"$(fill {path})" in README, path  # used by the role commands


def test_the_sagemaker_role_trusts_only_sagemaker_for_this_account() -> None:
    (statement,) = filled_policy("docs/iam/sagemaker-trust-policy.json")["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"].startswith(
        "arn:aws:sagemaker:eu-west-1:123456789012:"
    )


# Actions with no resource ARN (the IAM Service Authorization Reference).
NO_RESOURCE_LEVEL_ACTIONS = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}


def test_the_sagemaker_role_policy_is_least_privilege_on_the_bucket() -> None:
    bucket = EXAMPLE_VALUES["$BUCKET"]
    statements = filled_policy("docs/iam/sagemaker-execution-policy.json")["Statement"]
    granted: dict[str, set[str]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        assert all("*" not in action for action in actions), statement
        if "*" in resources:
            assert set(actions) <= NO_RESOURCE_LEVEL_ACTIONS, statement
        for action in actions:
            granted.setdefault(action, set()).update(resources)
    s3 = f"arn:aws:s3:::{bucket}"
    assert granted["s3:ListBucket"] == {s3}
    assert granted["s3:PutObject"] == {f"{s3}/models/*", f"{s3}/data_capture/*"}
    assert f"{s3}/*" not in granted["s3:GetObject"]
    assert all(r.startswith(f"{s3}/") for r in granted["s3:GetObject"])
    assert not {a for a in granted if a.startswith("s3:")} - {
        "s3:ListBucket", "s3:GetObject", "s3:PutObject"
    }  # fmt: skip


def test_the_sagemaker_role_may_read_the_rollouts_alarms_and_nothing_more() -> None:
    """SageMaker's deployment guardrails ("Auto-Rollback Configuration and Monitoring"):
    the execution role needs cloudwatch:DescribeAlarms on the auto-rollback alarms the
    rollout names (`<endpoint>-v<version>-...`); it may not change alarms."""
    policy = filled_policy("docs/iam/sagemaker-execution-policy.json")
    alarm = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{}"
    prefix = f"{DEFAULT_ENDPOINT_NAME}-{variant_for_version(2)}"

    def decision(action: str, resource: str) -> iam.Decision:
        return iam.evaluate([policy], iam.Request("role", action, resource, {}))

    for name in (f"{prefix}-5xx-errors", f"{prefix}-doubtful-share"):
        assert decision("cloudwatch:DescribeAlarms", alarm.format(name)) == iam.Decision.ALLOW
    for action in ("cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"):
        assert decision(action, alarm.format(f"{prefix}-5xx-errors")) == iam.Decision.NONE
    other_account = "arn:aws:cloudwatch:eu-west-1:210987654321:alarm:{}"
    denied = decision("cloudwatch:DescribeAlarms", other_account.format(f"{prefix}-5xx-errors"))
    assert denied == iam.Decision.NONE


def test_the_registry_policy_reaches_only_the_projects_groups_and_models() -> None:
    bucket = EXAMPLE_VALUES["$BUCKET"]
    prefix = "arn:aws:sagemaker:eu-west-1:123456789012:"
    for statement in filled_policy("docs/iam/model-registry-policy.json")["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        assert all("*" not in action for action in actions), statement
        if resources == ["*"]:  # ListModelPackages has no resource ARN
            assert actions == ["sagemaker:ListModelPackages"], statement
            continue
        if actions == ["s3:GetBucketLocation"]:  # the region check, on the bucket alone
            assert resources == [f"arn:aws:s3:::{bucket}"], statement
            continue
        if actions == ["ssm:GetParameter"]:  # the serving image `image push` recorded
            assert resources == [
                "arn:aws:ssm:eu-west-1:123456789012:parameter/scones-unlimited/serving-image"
            ], statement
            continue
        for resource in resources:
            assert resource.startswith(
                (
                    f"{prefix}model-package",
                    f"{prefix}endpoint",
                    f"{prefix}model/scones-",
                    f"arn:aws:s3:::{bucket}/models/",
                )
            )
            assert "/scones-" in resource or resource.endswith("/models/*"), resource


def test_local_aws_help_lists_the_commands_the_readme_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        local_aws_main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for name in ("up", "down", "serve"):
        assert name in help_text


def test_the_demos_help_is_where_the_readme_says(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m training_job.demo --help` (the README's command table) lists its options."""
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--bucket", "--port", "--endpoint-port", "--epochs", "--out", "--state-dir"):
        assert option in help_text


def test_operations_describes_no_rollout_that_strands_the_handlers() -> None:
    """A second endpoint under a new name, then `sls deploy`, leaves the handlers on the old
    one (an unchanged template is not deployed); deleting the old one then breaks every
    run. Until a rollout command exists, no procedure creates a second endpoint."""
    for command in commands(OPERATIONS):
        words = shlex.split(command)
        if "training_job" in command and words[words.index("training_job") + 1] == "deploy":
            assert "--endpoint-name" not in words, command


BENCHMARKS_PAGE = (REPO_ROOT / "docs" / "benchmarks.md").read_text()
BENCHMARKS_HISTORY = (REPO_ROOT / "docs" / "benchmarks-history.md").read_text()
HISTORY_LINK = re.compile(r"\(benchmarks-history\.md#([^)\s]+)\)")


def table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def goal_rows() -> list[dict[str, str]]:
    """The goal table under benchmarks.md's "## Goals", one {column: cell} per goal."""
    if "\n## Goals\n" not in BENCHMARKS_PAGE:
        return []
    section = BENCHMARKS_PAGE.split("\n## Goals\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    columns = table_cells(lines[0])
    return [dict(zip(columns, table_cells(line), strict=True)) for line in lines[2:]]


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings outside code blocks: lowercased, punctuation
    dropped, spaces as hyphens, and -1, -2 ... after repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = re.match(r"#{1,6} (.+)", line)
        if heading and not in_code:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            repeats = seen.get(slug, 0)
            seen[slug] = repeats + 1
            anchors.add(f"{slug}-{repeats}" if repeats else slug)
    return anchors


def check_benchmark_command(command: str, more_options: list[str]) -> None:
    """A benchmarks/ script that exists, given only options its argparse declares."""
    named = re.search(r"benchmarks/\S+\.py", command)
    assert named, command
    script = REPO_ROOT / named.group(0)
    assert script.is_file(), script
    source = script.read_text()
    words = shlex.split(command) + [w for o in more_options for w in shlex.split(o)]
    for option in (word.split("=", 1)[0] for word in words if word.startswith("--")):
        assert f'"{option}"' in source, f"{script.name} declares no {option}"


def check_pytest_command(command: str) -> None:
    """A test module that exists, and a -k naming tests it holds."""
    words = shlex.split(command)
    module = REPO_ROOT / next(word for word in words if word.startswith("tests/"))
    tests = set(re.findall(r"^def (test_\w+)", module.read_text(), flags=re.MULTILINE))
    for name in words[words.index("-k") + 1].split():
        if name not in {"or", "and", "not"}:
            assert any(name in test for test in tests), f"no test in {module.name} matches {name}"


def test_the_benchmarks_page_is_a_goal_table_under_300_lines() -> None:
    assert len(BENCHMARKS_PAGE.splitlines()) < 300
    assert goal_rows()


@pytest.mark.parametrize("row", goal_rows(), ids=lambda row: row["Goal (issue)"][:60])
def test_each_goal_is_measured_by_a_command_that_exists(row: dict[str, str]) -> None:
    """The first backquoted command runs a benchmarks/ script with options it declares
    (options in further backquotes are for the same script), `make demo`, or a pytest
    selection of tests that exist: a renamed script, option or test fails here."""
    command, *more_options = re.findall(r"`([^`]+)`", row["Command"])
    if "benchmarks/" in command:
        check_benchmark_command(command, more_options)
    elif command.startswith("make "):
        assert makefile_has_target(command), command
    else:
        assert "-m pytest" in command, command
        check_pytest_command(command)


@pytest.mark.parametrize("row", goal_rows(), ids=lambda row: row["Goal (issue)"][:60])
def test_each_goal_has_a_current_figure_a_verdict_a_date_and_its_record(
    row: dict[str, str],
) -> None:
    assert row["Current figure"] and row["Met"]
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", row["Measured"]), row["Measured"]
    assert HISTORY_LINK.search(row["Full tables"]), row["Full tables"]


def test_every_link_into_the_benchmark_history_names_one_of_its_headings() -> None:
    anchors = heading_anchors(BENCHMARKS_HISTORY)
    links = HISTORY_LINK.findall(BENCHMARKS_PAGE)
    assert links
    assert sorted(set(links) - anchors) == []


def test_every_file_the_benchmarks_page_names_exists() -> None:
    """A module that moves takes the page's path to it along (the page names files for the
    reader to open)."""
    named = re.findall(r"`((?:[\w.-]+/)+[\w.-]+\.(?:py|yml|json|md))`", BENCHMARKS_PAGE)
    assert named
    assert [path for path in named if not (REPO_ROOT / path).is_file()] == []
