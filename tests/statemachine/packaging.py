"""Run the Serverless CLI (osls, from node_modules) offline, as the tests need it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SLS = REPO_ROOT / "node_modules" / ".bin" / "sls"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


def sls_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment, with dummy credentials (osls wants some even
    offline), the project's venv first on PATH (invoke local runs `python3`), and no
    telemetry or update checks."""
    environment = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **os.environ,
        "VIRTUAL_ENV": str(REPO_ROOT / ".venv"),
        "SLS_TELEMETRY_DISABLED": "1",
        "SLS_NOTIFICATIONS_MODE": "off",
    }
    environment["PATH"] = f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{environment['PATH']}"
    environment.update(extra or {})
    return environment


def sls(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SLS), *args],
        cwd=REPO_ROOT,
        env=sls_environment(extra_env),
        capture_output=True,
        text=True,
        timeout=180,
    )


def package(stage: str, out_dir: Path, *params: str) -> dict[str, Any]:
    """`sls package` into out_dir (never the shared .serverless/); returns the template."""
    args = ["package", "--stage", stage, "--package", str(out_dir)]
    for param in params:
        args += ["--param", param]
    result = sls(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    template: dict[str, Any] = json.loads(
        (out_dir / "cloudformation-template-update-stack.json").read_text()
    )
    return template


def resolve_definition(template: dict[str, Any]) -> dict[str, Any]:
    """The state machine's definition as CloudFormation would resolve it (its Fn::Sub),
    in a made-up account: `${Name}` variables that are Fn::GetAtt on a function become
    that function's ARN, pseudo parameters become the account's values."""
    resources = template["Resources"]
    definition = resources["ImageWorkflow"]["Properties"]["DefinitionString"]
    text, variables = definition["Fn::Sub"] if isinstance(definition, dict) else (definition, {})
    if isinstance(text, list):
        text, variables = text
    values = {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT_ID,
    }
    for name, value in variables.items():
        logical_id, attribute = value["Fn::GetAtt"]
        assert attribute == "Arn", value
        function_name = resources[logical_id]["Properties"]["FunctionName"]
        values[name] = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, f"unresolved substitution in {text}"
    resolved: dict[str, Any] = json.loads(text)
    return resolved
