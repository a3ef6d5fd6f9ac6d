"""How long CloudWatch Logs keeps SageMaker's log groups.

SageMaker writes a training job's logs to /aws/sagemaker/TrainingJobs and an endpoint's
to /aws/sagemaker/Endpoints/<endpoint>, creating each group with no retention: CloudWatch
Logs keeps them forever, billed per GB stored. `train` and `deploy` (--mode sagemaker)
give the group they use a retention (--log-retention-days, one of PutRetentionPolicy's
retentionInDays values), creating it first when SageMaker has not yet.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from contract.aws_errors import error_code

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ENDPOINT_LOG_GROUP = "/aws/sagemaker/Endpoints/{endpoint}"
# PutRetentionPolicy's retentionInDays values (CloudWatch Logs API reference).
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                  1827, 2192, 2557, 2922, 3288, 3653)  # fmt: skip
DEFAULT_RETENTION_DAYS = 30


def add_option(group: Any, log_group: str) -> None:
    group.add_argument(
        "--log-retention-days",
        type=int,
        choices=RETENTION_DAYS,
        default=DEFAULT_RETENTION_DAYS,
        metavar="DAYS",
        help=f"how long CloudWatch Logs keeps SageMaker's log group {log_group} (default: "
        "%(default)s; one of CloudWatch's retention periods: "
        f"{', '.join(map(str, RETENTION_DAYS))})",
    )


def keep(logs: Any, group: str, days: int) -> None:
    """Give `group` a retention of `days`, creating it when it does not exist yet
    (PutRetentionPolicy replaces an earlier retention)."""
    try:
        logs.create_log_group(logGroupName=group)
    except ClientError as error:
        if error_code(error) != "ResourceAlreadyExistsException":
            raise
    logs.put_retention_policy(logGroupName=group, retentionInDays=days)
    print(f"log group {group} keeps its logs {days} days")
