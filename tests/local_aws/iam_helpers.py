"""Roles the tests make in the local AWS, which enforces IAM (test_iam.py, and every test
that runs a state machine of its own)."""

from __future__ import annotations

import json
from typing import Any


def state_machine_role(iam_client: Any, name: str, function_arns: list[str]) -> str:
    """A role a state machine can run with in the local AWS, which enforces IAM: trusted by
    Step Functions, allowed to invoke `function_arns` (the role other tests give theirs)."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "states.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    arn: str = iam_client.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"
    ]["Arn"]
    invoke = {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": function_arns}
    iam_client.put_role_policy(
        RoleName=name,
        PolicyName="invoke",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [invoke]}),
    )
    return arn
