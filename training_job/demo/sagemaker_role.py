"""The SageMaker execution role the demo deploys with, made from the files the README's AWS
path makes it from (docs/iam/), with their placeholders filled as the README's `fill`
does. The tests that need the role make it the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
IAM_DIR = REPO_ROOT / "docs" / "iam"
SAGEMAKER_ROLE = "SconesSageMakerRole"


def filled_policy(name: str, bucket: str, region: str, account: str) -> dict[str, Any]:
    """docs/iam/NAME with its placeholders filled as the README's `fill` does."""
    text = (IAM_DIR / name).read_text()
    for placeholder, value in (("ACCOUNT_ID", account), ("REGION", region), ("BUCKET", bucket)):
        text = text.replace(placeholder, value)
    policy: dict[str, Any] = json.loads(text)
    return policy


def create_sagemaker_role(
    iam: Any,
    bucket: str,
    region: str,
    account: str,
    without: tuple[str, ...] = (),
    name: str = SAGEMAKER_ROLE,
) -> str:
    """Create (or update) the SageMaker execution role from docs/iam/ as the README's AWS
    path does, leaving out the execution policy's statements whose Sid is in `without`;
    returns its ARN."""
    trust = json.dumps(filled_policy("sagemaker-trust-policy.json", bucket, region, account))
    policy = filled_policy("sagemaker-execution-policy.json", bucket, region, account)
    policy["Statement"] = [s for s in policy["Statement"] if s.get("Sid") not in without]
    try:
        arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:  # a local AWS already running
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    iam.put_role_policy(
        RoleName=name, PolicyName="scones-bucket", PolicyDocument=json.dumps(policy)
    )
    return arn
