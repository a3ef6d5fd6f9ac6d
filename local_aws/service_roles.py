"""The credentials the workflow's services act with in the local AWS: AssumeRole by a
service, with the role's trust policy checked.

- `assume_role_for_service` is what the Lambda executor, the Step Functions interpreter
  and the EventBridge trigger call: the role's trust policy must let the service principal
  assume it (with `aws:SourceAccount` and `aws:SourceArn` of the calling resource), and the
  credentials come from moto's STS, as on AWS; `assume_role_for_service_through_api` is
  the same for `training_job deploy --mode local`, which plays SageMaker for the local
  endpoint from its own process (the trust check is `require_trust` for both);
- `step_functions_act_as_their_role` makes moto's Step Functions interpreter call with its
  state machine's role.

What such credentials may then do is `local_aws.iam_enforcement`'s to decide.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contract.aws_errors import error_code
from local_aws.iam import AccessDenied, Decision, Request, evaluate, iam_backend


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str

    def environment(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }


_ROLE_SESSION_SECONDS = 12 * 3600  # the longest a role allows; moto does not expire them


def require_trust(
    trust_policy: str | Mapping[str, Any], role_arn: str, service: str, source_arn: str
) -> str:
    """Raise AccessDenied unless the trust policy lets `service` (e.g.
    lambda.amazonaws.com) assume `role_arn` acting for `source_arn`, with the
    `aws:SourceAccount` and `aws:SourceArn` AWS gives it; returns the source's region.
    The service's regional principal (`states.eu-west-1.amazonaws.com`, which the
    step-functions plugin writes) is trusted as the global one, as AWS accepts either."""
    parts = source_arn.split(":")
    if len(parts) < 6:
        raise AccessDenied(f"{service} cannot assume {role_arn} for {source_arn!r}: not an ARN")
    region = parts[3] or "us-east-1"
    name = service.removesuffix(".amazonaws.com")
    context = {
        "aws:SourceAccount": parts[4],
        "aws:SourceArn": source_arn,
        "aws:SecureTransport": "true",
    }
    trusted = any(
        evaluate(
            [trust_policy],
            Request(principal, "sts:AssumeRole", role_arn, context),
            resource_policy=True,
        )
        is Decision.ALLOW
        for principal in (service, f"{name}.{region}.amazonaws.com")
    )
    if not trusted:
        raise AccessDenied(
            f"{service} is not trusted by {role_arn} for {source_arn} "
            "(its AssumeRolePolicyDocument)"
        )
    return region


def assume_role_for_service(
    role_arn: str, service: str, source_arn: str, session_name: str
) -> Credentials:
    """Temporary credentials of `role_arn` for `service` acting for `source_arn`, after its
    trust policy is checked (`require_trust`); AccessDenied if it does not trust it. For
    the local AWS's own process: the credentials come from moto's STS, as on AWS."""
    from moto.iam.exceptions import NotFoundException
    from moto.sts.models import sts_backends

    account_id = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
    try:
        role = iam_backend(account_id).get_role_by_arn(role_arn)
    except (NotFoundException, KeyError):
        raise AccessDenied(f"{service} cannot assume {role_arn}: no such role") from None
    region = require_trust(role.assume_role_policy_document, role_arn, service, source_arn)
    assumed = sts_backends[account_id]["aws"].assume_role(
        region_name=region,
        role_session_name=session_name[:64],
        role_arn=role_arn,
        policy="",
        duration=_ROLE_SESSION_SECONDS,
        external_id="",
    )
    return Credentials(assumed.access_key_id, assumed.secret_access_key, assumed.session_token)


def assume_role_for_service_through_api(
    session: Any, role_arn: str, service: str, source_arn: str, session_name: str
) -> tuple[Credentials, datetime]:
    """The same for a process outside the local AWS that plays the service (`training_job
    deploy --mode local` starts the endpoint as SageMaker would): the trust policy is read
    with IAM's GetRole and checked by `require_trust`, and the credentials come from the
    local AWS's STS AssumeRole, for the role's MaxSessionDuration (AWS's limit for a
    session). Returns them with their expiry; AccessDenied when the role is missing or
    does not trust the service."""
    from botocore.exceptions import ClientError

    role_name = role_arn.rsplit("/", 1)[-1]
    try:
        role = session.client("iam").get_role(RoleName=role_name)["Role"]
    except ClientError as error:
        if error_code(error) == "NoSuchEntity":
            raise AccessDenied(f"{service} cannot assume {role_arn}: no such role") from None
        raise
    if role["Arn"] != role_arn:
        raise AccessDenied(f"{service} cannot assume {role_arn}: no such role")
    require_trust(role["AssumeRolePolicyDocument"], role_arn, service, source_arn)
    assumed = session.client("sts").assume_role(
        RoleArn=role_arn,
        RoleSessionName=session_name[:64],
        DurationSeconds=int(role.get("MaxSessionDuration") or 3600),
    )["Credentials"]
    credentials = Credentials(
        assumed["AccessKeyId"], assumed["SecretAccessKey"], assumed["SessionToken"]
    )
    return credentials, assumed["Expiration"]


def step_functions_act_as_their_role() -> None:
    """Gap: moto's Step Functions interpreter signed its Lambda, DynamoDB and EventBridge
    calls with fixed dummy keys.
    Each execution now calls with its state machine's role, assumed by states.amazonaws.com
    for that state machine (once per role: moto does not expire the credentials). Speed:
    one boto3 client per region, service and role, reused (botocore clients are
    thread-safe), so connections stay alive instead of one new client per task."""
    from botocore.exceptions import ClientError
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
        lambda_eval_utils,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.credentials import (
        StateCredentials,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_dynamodb,
        state_task_service_events,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task import (
        StateTask,
    )

    create = lambda_eval_utils.boto_client_for
    clients: dict[tuple[str, str, str], Any] = {}
    lock = threading.Lock()

    def eval_state_credentials(self: StateTask, env: Any) -> StateCredentials:
        credentials = eval_credentials(self, env)
        machine = env.states.context_object.context_object_data["StateMachine"]["Id"]
        credentials.source_arn = machine  # type: ignore[attr-defined]
        return credentials

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        role_arn = str(getattr(state_credentials, "role_arn", "") or "")
        source_arn = str(getattr(state_credentials, "source_arn", "") or "")
        with lock:
            client = clients.get((region, service, role_arn))
            if client is None:
                client = create(region, service, state_credentials)
                if role_arn:
                    try:
                        keys = assume_role_for_service(
                            role_arn, "states.amazonaws.com", source_arn, "local-aws-states"
                        )
                    except AccessDenied as denied:  # the task fails, as a call refused
                        # With a request id, as every AWS answer has: the tasks quote it in
                        # their cause (without one the task failed with States.Runtime,
                        # KeyError('RequestId'), which no Catch sees).
                        raise ClientError(
                            {
                                "Error": {"Code": "AccessDeniedException", "Message": str(denied)},
                                "ResponseMetadata": {
                                    "HTTPStatusCode": 403,
                                    "RequestId": str(uuid.uuid4()),
                                },
                            },
                            "Invoke",
                        ) from None
                    client = _client_with(client, region, service, keys)
                clients[(region, service, role_arn)] = client
            return client

    eval_credentials = StateTask._eval_state_credentials
    StateTask._eval_state_credentials = eval_state_credentials  # type: ignore[method-assign]
    lambda_eval_utils.boto_client_for = boto_client_for
    # The DynamoDB and EventBridge tasks (the workflow's decision) call with the role too.
    state_task_service_dynamodb.boto_client_for = boto_client_for
    state_task_service_events.boto_client_for = boto_client_for


def _client_with(template: Any, region: str, service: str, keys: Credentials) -> Any:
    """A client like `template` (endpoint and configuration) signing with `keys`."""
    import boto3

    return boto3.client(
        service,
        region_name=region,
        endpoint_url=template.meta.endpoint_url,
        config=template.meta.config,
        aws_access_key_id=keys.access_key_id,
        aws_secret_access_key=keys.secret_access_key,
        aws_session_token=keys.session_token,
    )
