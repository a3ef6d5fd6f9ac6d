"""Bucket policies with conditions, as the local AWS evaluates them.

moto's S3 evaluates a bucket policy's statements but ignores their `Condition` blocks, so
a statement meant for some requests applies to all of them. The bucket `training_job
stage` creates carries the usual TLS-only statement (Deny s3:* when
`aws:SecureTransport` is false); moto applies that Deny to every request and the bucket
becomes unusable. Here a statement with a condition is left out of moto's evaluation:
the local AWS cannot evaluate conditions, so it grants nothing and denies nothing by
one. The policy itself is stored and returned unchanged, and on AWS it is enforced.
"""

from __future__ import annotations

import json
from typing import Any


def _unconditional_statements(policy: bytes) -> bytes | None:
    document = json.loads(policy)
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    kept = [statement for statement in statements if "Condition" not in statement]
    if not kept:
        return None
    return json.dumps({**document, "Statement": kept}).encode()


def skip_conditional_bucket_policy_statements() -> None:
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    def get_permission(self: FakeBucket, action: str, resource: str) -> Any:
        policy = None if self.policy is None else _unconditional_statements(self.policy)
        if policy is None:
            return PermissionResult.NEUTRAL
        return IAMPolicy(policy.decode()).is_action_permitted(action, resource)

    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]


PATCHES = [skip_conditional_bucket_policy_statements]
