"""Bucket policies with conditions, as the local AWS evaluates them.

moto's S3 evaluates a bucket policy's statements for every object request but ignores
their `Condition` blocks, so a statement meant for some requests applied to all of them:
the usual TLS-only statement of the bucket `training_job stage` creates (Deny s3:* when
`aws:SecureTransport` is false) made the bucket unusable. Here the policy is evaluated by
`local_aws.iam` instead: conditions on the keys it knows are evaluated (the local AWS
stands in for AWS's HTTPS endpoints, so aws:SecureTransport is true), and a condition it
cannot evaluate is never taken as satisfied (a Deny with one denies). Statements for a
named principal are evaluated with that principal's requests (`local_aws.iam.authorize`).
"""

from __future__ import annotations

from typing import Any

from local_aws import iam


def evaluate_bucket_policy_conditions() -> None:
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import FakeBucket

    results = {
        iam.Decision.ALLOW: PermissionResult.PERMITTED,
        iam.Decision.DENY: PermissionResult.DENIED,
        iam.Decision.NONE: PermissionResult.NEUTRAL,
    }

    def get_permission(self: FakeBucket, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        return results[iam.bucket_permission(self.policy.decode(), action, resource)]

    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]
