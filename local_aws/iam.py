"""IAM in the local AWS: the workflow's own identities are held to their policies.

On AWS each Lambda function, the state machine and the EventBridge target act with
temporary credentials of their own role (AssumeRole by the service), and every call they
make is evaluated against that role's policies and, for S3, the bucket policy. moto can
evaluate identity policies, but not for a request's real resource outside S3, not their
`Condition` blocks (a failed condition even turns an Allow into a Deny), and not together
with a bucket policy. So the local AWS does it here:

- `assume_role_for_service` is what the Lambda executor, the Step Functions interpreter
  and the EventBridge trigger call: the role's trust policy must let the service principal
  assume it (with `aws:SourceAccount` and `aws:SourceArn` of the calling resource), and the
  credentials come from moto's STS, as on AWS; `assume_role_for_service_through_api` is
  the same for `training_job deploy --mode local`, which plays SageMaker for the local
  endpoint from its own process (the trust check is `require_trust` for both);
- `enforce_iam_for_assumed_roles` makes every request signed with such credentials pass
  `authorize`: an explicit Deny in the role's policies or the bucket policy refuses, an
  Allow in either admits, anything else is AccessDenied. S3 answers a missing key with
  AccessDenied, not NoSuchKey, when the caller may not s3:ListBucket, as S3 does.
- Requests signed with any other credentials (the operator's `testing` keys that the CLI,
  `sls deploy` and the tests use: AWS's account administrator) are not evaluated.

Conditions are evaluated for the keys the local AWS knows for a request (`CONTEXT_KEYS`);
a condition on any other key, or with an operator not in `OPERATORS`, cannot be evaluated
here, and is never taken as satisfied: an Allow with it grants nothing and a Deny with it
denies (docs/local-mode.md lists them).
"""

from __future__ import annotations

import functools
import json
import re
import threading
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

ACCOUNT_ID = "123456789012"  # moto's default account

# Condition keys the local AWS fills in when a request has them. The local AWS listens on
# plain HTTP on the loopback, standing in for AWS's HTTPS endpoints: aws:SecureTransport is
# "true", as it is for every SDK call to AWS.
CONTEXT_KEYS = frozenset(
    {
        "aws:securetransport",
        "aws:principalarn",
        "aws:principalaccount",
        "aws:requestedregion",
        "aws:sourceaccount",
        "aws:sourcearn",
        "s3:prefix",
        "cloudwatch:namespace",
        *("dynamodb:leadingkeys", "dynamodb:attributes", "events:source", "events:detail-type"),
        "dynamodb:returnvalues",
    }
)
# Of those, the keys the local AWS fills in only for some requests of their service
# (DynamoDB's for PutItem and UpdateItem, EventBridge's for PutEvents): on any other request
# it does not know them, which is not the same as knowing they are absent.
# (dynamodb:ReturnValues is not one: a request without ReturnValues has no such key.)
REQUEST_SPECIFIC_KEYS = frozenset(
    {"dynamodb:leadingkeys", "dynamodb:attributes", "events:source", "events:detail-type"}
)

# moto's operation names where IAM's action differs (S3 and Lambda name theirs apart).
IAM_ACTIONS = {
    "s3:ListObjects": "s3:ListBucket",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "s3:CopyObject": "s3:PutObject",
    "s3:DeleteObjects": "s3:DeleteObject",
    "lambda:Invoke": "lambda:InvokeFunction",
    "lambda:InvokeAsync": "lambda:InvokeFunction",
}


# Signing names that differ from the service's prefix in IAM actions.
IAM_PREFIXES = {"monitoring": "cloudwatch"}


class Decision(Enum):
    ALLOW = "allow"
    DENY = "deny"
    NONE = "none"  # no statement applies: an implicit deny


class AccessDenied(Exception):
    """A call the principal's policies do not allow (AWS's AccessDenied)."""


# A condition key's value: one string, or several (a multivalued key such as
# dynamodb:Attributes, or a key PutEvents has once per entry).
ContextValue = str | tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """What a policy is evaluated against."""

    principal_arn: str  # the role's ARN (what trust and resource policies name)
    action: str
    resource: str
    context: Mapping[str, ContextValue]


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)]


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _glob_expression(pattern, ignore_case).fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)  # speed: every request evaluates the same few patterns
def _glob_expression(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # IAM wildcards: * any run of characters, ? one character; nothing else is special.
    expression = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.IGNORECASE if ignore_case else 0
    return re.compile(expression, flags | re.DOTALL)


def _string_equals(pattern: str, value: str) -> bool:
    return pattern == value


def _string_equals_ignore_case(pattern: str, value: str) -> bool:
    return pattern.lower() == value.lower()


def _bool(pattern: str, value: str) -> bool:
    return pattern.lower() == value.lower()


# operator -> (matches one policy value against the request's value, negated)
OPERATORS = {
    "StringEquals": (_string_equals, False),
    "StringNotEquals": (_string_equals, True),
    "StringEqualsIgnoreCase": (_string_equals_ignore_case, False),
    "StringNotEqualsIgnoreCase": (_string_equals_ignore_case, True),
    "StringLike": (_glob, False),
    "StringNotLike": (_glob, True),
    "ArnEquals": (_string_equals, False),
    "ArnNotEquals": (_string_equals, True),
    "ArnLike": (_glob, False),
    "ArnNotLike": (_glob, True),
    "Bool": (_bool, False),
}


class Unevaluable(Exception):
    """A condition the local AWS cannot evaluate (its operator or its key)."""


def condition_holds(conditions: Mapping[str, Any], context: Mapping[str, ContextValue]) -> bool:
    """Whether every condition of a statement holds for the request (all must, AWS's AND).

    A key the request lacks fails a condition, except with `...IfExists` and with the
    negated operators, which then hold (AWS's rule for absent keys); `ForAllValues:` holds
    and `ForAnyValue:` fails for an absent key. A multivalued key is matched value by value:
    `ForAllValues:` needs every value to match, `ForAnyValue:` one; without a qualifier every
    value must (PutEvents' per-entry keys, as AWS authorizes each entry).
    """
    known = {name.lower(): value for name, value in context.items()}
    for operator, block in conditions.items():
        qualifier, _, bare = operator.rpartition(":")
        name = bare.removesuffix("IfExists")
        if (
            name not in OPERATORS
            or qualifier not in ("", "ForAllValues", "ForAnyValue")
            or not isinstance(block, dict)
        ):
            raise Unevaluable(f"condition operator {operator}")
        match, negated = OPERATORS[name]
        for key, expected in block.items():
            if key.lower() not in CONTEXT_KEYS:
                raise Unevaluable(f"condition key {key}")
            actual = known.get(key.lower())
            if actual is None:
                if key.lower() in REQUEST_SPECIFIC_KEYS:
                    raise Unevaluable(f"condition key {key} on this request")
                if qualifier == "ForAnyValue":
                    return False
                if not (qualifier == "ForAllValues" or bare.endswith("IfExists") or negated):
                    return False
                continue
            patterns = _strings(expected)
            holds = [
                any(match(pattern, value) for pattern in patterns) != negated
                for value in ((actual,) if isinstance(actual, str) else actual)
            ]
            if not (any(holds) if qualifier == "ForAnyValue" else all(holds)):
                return False
    return True


def _principal_matches(principal: Any, request: Request, allow: bool) -> bool:
    """A resource or trust policy's Principal against an AWS principal or a service.

    The account itself (`123456789012`, `arn:aws:iam::123456789012:root`) as Principal
    delegates to the account's identity policies: it grants nothing by itself, and denies
    every principal of the account."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    candidates = _strings(principal.get("AWS")) + _strings(principal.get("Service"))
    account = request.principal_arn.split(":")[4] if request.principal_arn.count(":") >= 5 else ""
    accounts = () if allow or not account else (account, f"arn:aws:iam::{account}:root")
    return any(
        candidate in ("*", request.principal_arn) or candidate in accounts
        for candidate in candidates
    )


def _applies(statement: Mapping[str, Any], request: Request, resource_policy: bool) -> bool:
    if resource_policy:
        allow = statement.get("Effect") == "Allow"
        if "Principal" in statement and not _principal_matches(
            statement["Principal"], request, allow
        ):
            return False
        if "NotPrincipal" in statement:
            raise Unevaluable("NotPrincipal")
    if "Action" in statement:
        named = _strings(statement["Action"])
        if not any(_glob(pattern, request.action, ignore_case=True) for pattern in named):
            return False
    elif any(
        _glob(pattern, request.action, ignore_case=True)
        for pattern in _strings(statement.get("NotAction"))
    ):
        return False
    if "Resource" in statement:
        if not any(_glob(p, request.resource) for p in _strings(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(_glob(p, request.resource) for p in _strings(statement["NotResource"])):
            return False
    elif not resource_policy or "Principal" not in statement:
        return False  # an identity policy's statement needs a Resource
    return condition_holds(statement.get("Condition") or {}, request.context)


def evaluate(
    documents: Iterable[str | Mapping[str, Any]], request: Request, resource_policy: bool = False
) -> Decision:
    """The decision of a set of policies for one request: an explicit Deny wins."""
    allowed = False
    for document in documents:
        parsed = _document(document)
        statements = parsed.get("Statement", [])
        for statement in [statements] if isinstance(statements, dict) else statements:
            try:
                applies = _applies(statement, request, resource_policy)
            except Unevaluable:
                # Never taken as satisfied: an Allow grants nothing, a Deny denies.
                applies = statement.get("Effect") == "Deny"
            if not applies:
                continue
            if statement.get("Effect") == "Deny":
                return Decision.DENY
            allowed = True
    return Decision.ALLOW if allowed else Decision.NONE


# --- the roles moto stores -------------------------------------------------------------


def _iam_backend(account_id: str) -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[account_id]["aws"]


def role_policies(role_arn: str) -> list[Any]:
    """The inline and attached policy documents of a role (moto's IAM)."""
    role = _iam_backend(role_arn.split(":")[4]).get_role_by_arn(role_arn)
    documents = list(role.policies.values())
    for policy in role.managed_policies.values():
        version = next(v for v in policy.versions if v.is_default)
        documents.append(version.document)
    return documents


def _document(policy: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """A policy document as moto keeps it: JSON text (from the API, maybe URL-encoded) or
    already a dict (from CloudFormation)."""
    from urllib.parse import unquote

    if not isinstance(policy, str):
        return policy
    try:
        parsed: Mapping[str, Any] = json.loads(policy)
    except ValueError:
        parsed = json.loads(unquote(policy))
    return parsed


# Allowed whatever the policies say, an explicit Deny included (AWS's documented rule).
ALWAYS_ALLOWED = frozenset({"sts:GetCallerIdentity"})


def authorize(request: Request, resource_policy: str | None = None) -> None:
    """Raise AccessDenied unless the role's policies or the resource policy allow `request`
    and neither denies it (the same-account evaluation of AWS)."""
    if request.action in ALWAYS_ALLOWED:
        return
    identity = evaluate(role_policies(request.principal_arn), request)
    resource = (
        Decision.NONE
        if resource_policy is None
        else evaluate([resource_policy], request, resource_policy=True)
    )
    if Decision.DENY in (identity, resource) or Decision.ALLOW not in (identity, resource):
        raise AccessDenied(
            f"User: {request.principal_arn} is not authorized to perform: {request.action} "
            f"on resource: {request.resource}"
            + (" with an explicit deny" if Decision.DENY in (identity, resource) else "")
        )


# --- AssumeRole by a service -------------------------------------------------------------


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
        role = _iam_backend(account_id).get_role_by_arn(role_arn)
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
        if error.response["Error"]["Code"] == "NoSuchEntity":
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


# --- enforcement in moto's request path ------------------------------------------------


def _assumed_role_of(access_key_id: str) -> Any:
    from moto.sts.models import sts_backends

    for account in list(sts_backends.keys()):
        for assumed in sts_backends[account]["aws"].assumed_roles:
            if assumed.access_key_id == access_key_id:
                return assumed
    return None


_ACCESS_KEY = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/")


def _request_of(response: Any, assumed: Any, service: str, region: str) -> Request:
    """The action, resource and condition keys of a request moto is about to serve."""
    from urllib.parse import unquote

    operation = response._get_action()
    action = f"{service}:{operation}"
    action = IAM_ACTIONS.get(action, action)
    account = assumed.role_arn.split(":")[4]
    context = {
        "aws:SecureTransport": "true",
        "aws:PrincipalArn": assumed.role_arn,
        "aws:PrincipalAccount": account,
        "aws:RequestedRegion": region,
    }
    resource = "*"
    path = unquote(response.path.split("?")[0])
    if service == "s3":
        bucket = getattr(response, "bucket_name", None) or response.data.get("BucketName") or ""
        key = getattr(response, "_local_aws_key", None)
        resource = f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket or '*'}"
        if action == "s3:ListBucket":
            prefix = response.querystring.get("prefix")
            if prefix is not None:
                context["s3:prefix"] = prefix[0]
    elif service == "lambda":
        match = re.search(r"/functions/([^/]+)/", path)
        name = match.group(1) if match else "*"
        qualifier = response._get_param("Qualifier") or response.querystring.get("Qualifier")
        resource = (
            name
            if name.startswith("arn:")
            else (f"arn:aws:lambda:{region}:{account}:function:{name}")
        )
        if isinstance(qualifier, list):
            qualifier = qualifier[0]
        if qualifier and resource.count(":") == 6:
            resource += f":{qualifier}"
    elif service == "states":
        arn = response._get_param("stateMachineArn") or response._get_param("executionArn")
        resource = str(arn or "*")
    elif service == "cloudwatch":
        namespace = response._get_param("Namespace")
        if namespace:
            context["cloudwatch:namespace"] = str(namespace)
    elif service == "dynamodb":
        resource = _dynamodb_request(response, action, region, account, context)
    elif service == "events":
        resource = _events_request(response, action, region, account, context)
    elif service == "ssm" and response._get_param("Name"):
        # A parameter's ARN (SSM's resource types): "parameter" + its name, whose leading
        # "/" is the separator for a hierarchical name.
        name = str(response._get_param("Name")).lstrip("/")
        resource = f"arn:aws:ssm:{region}:{account}:parameter/{name}"
    elif service == "sagemaker":  # the registry and what deploy reads (model_packages)
        from local_aws.model_packages import iam_resource

        resource = iam_resource(operation, response._get_param, region, account)
    # SageMaker Runtime's InvokeEndpoint is served outside moto (local_aws.sagemaker_runtime).
    return Request(assumed.role_arn, action, resource, context)


def _dynamodb_request(
    response: Any, action: str, region: str, account: str, context: dict[str, ContextValue]
) -> str:
    """The table's ARN, or its index's when the request names one (Query, Scan); for
    PutItem, dynamodb:LeadingKeys (the item's partition key value) and dynamodb:Attributes
    (its attribute names), as DynamoDB fills them in; for UpdateItem, the key's partition
    value and the attributes it names (the key, and those of its update and condition
    expressions); dynamodb:ReturnValues when the request has ReturnValues."""
    name = str(response._get_param("TableName") or "*")
    arn = name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{account}:table/{name}"
    index = response._get_param("IndexName")
    if index:
        return f"{arn}/index/{index}"
    return_values = response._get_param("ReturnValues")
    if return_values:
        context["dynamodb:ReturnValues"] = str(return_values)
    key = response._get_param("Key")
    if action == "dynamodb:UpdateItem" and isinstance(key, dict):
        partition = next(iter(key.values()), None)
        if isinstance(partition, dict) and len(partition) == 1:
            context["dynamodb:LeadingKeys"] = (str(next(iter(partition.values()))),)
        context["dynamodb:Attributes"] = tuple(sorted(set(key) | _expression_attributes(response)))
        return arn
    item = response._get_param("Item")
    if action == "dynamodb:PutItem" and isinstance(item, dict):
        from moto.dynamodb.models import dynamodb_backends

        try:
            table = dynamodb_backends[account][region].get_table(arn.rsplit("/", 1)[-1])
        except Exception:  # no such table: DynamoDB answers that after authorization
            return arn
        key = item.get(table.hash_key_attr)
        if isinstance(key, dict) and len(key) == 1:
            context["dynamodb:LeadingKeys"] = (str(next(iter(key.values()))),)
        context["dynamodb:Attributes"] = tuple(str(attribute) for attribute in item)
    return arn


# Words of DynamoDB's update and condition expressions that are not attribute names.
_EXPRESSION_WORDS = frozenset(
    {
        *("set", "remove", "add", "delete", "and", "or", "not", "between", "in"),
        *("if_not_exists", "list_append", "attribute_exists", "attribute_not_exists"),
        *("attribute_type", "begins_with", "contains", "size"),
    }
)
_EXPRESSION_NAME = re.compile(r"(?<![:#\w])(#?[A-Za-z_][A-Za-z0-9_]*)")


def _expression_attributes(response: Any) -> set[str]:
    """The top-level attribute names an UpdateItem's expressions use (`#name` resolved)."""
    names = response._get_param("ExpressionAttributeNames") or {}
    found: set[str] = set()
    for parameter in ("UpdateExpression", "ConditionExpression"):
        expression = str(response._get_param(parameter) or "")
        # Only a path's first element is an item's attribute (a.b[0] is attribute a).
        for match in _EXPRESSION_NAME.finditer(expression):
            start = match.start()
            if start and expression[start - 1] in ".]":
                continue
            token = match.group(1)
            if token.startswith("#"):
                found.add(str(names.get(token, token)))
            elif token.lower() not in _EXPRESSION_WORDS:
                found.add(token)
    return found


def _events_request(
    response: Any, action: str, region: str, account: str, context: dict[str, ContextValue]
) -> str:
    """The event bus's ARN; for PutEvents, events:source and events:detail-type, one value
    per entry (each entry must be allowed)."""
    entries = response._get_param("Entries") if action == "events:PutEvents" else None
    if not isinstance(entries, list) or not entries:
        bus = str(response._get_param("EventBusName") or response._get_param("Name") or "*")
    else:
        context["events:source"] = tuple(str(e.get("Source") or "") for e in entries)
        context["events:detail-type"] = tuple(str(e.get("DetailType") or "") for e in entries)
        # One bus per request here (the workflow's); entries for several name the first.
        bus = sorted({str(e.get("EventBusName") or "default") for e in entries})[0]
    return bus if bus.startswith("arn:") else f"arn:aws:events:{region}:{account}:event-bus/{bus}"


# Services that answer AccessDenied; the others (JSON-born APIs) AccessDeniedException.
QUERY_ERROR_NAMES = frozenset({"cloudwatch", "iam", "sts", "sns", "sqs", "cloudformation"})


class _Refused(Exception):
    """Raised by the authorization hook, answered by `call_action` in the service's own
    protocol (moto's serializer for the operation's model: XML, JSON or CBOR)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _refuse(service: str, message: str) -> None:
    from moto.s3.exceptions import S3AccessDeniedError

    if service == "s3":
        raise S3AccessDeniedError()  # S3's handler answers it as S3 does (XML, 403)
    code = "AccessDenied" if service in QUERY_ERROR_NAMES else "AccessDeniedException"
    raise _Refused(code, message)


def _answer_refusals() -> None:
    from moto.core.exceptions import ServiceException
    from moto.core.responses import ActionResult, BaseResponse

    class AccessDeniedError(ServiceException):
        """Defined outside moto's packages, so that moto's serializer looks its code up in
        the model of the service that was called only."""

    call_action = BaseResponse.call_action

    def call_action_or_refuse(self: Any) -> Any:
        try:
            return call_action(self)
        except _Refused as refused:
            with warnings.catch_warnings():  # "no such error shape": AWS's common errors
                warnings.simplefilter("ignore", UserWarning)
                _, headers, body = self.serialized(
                    ActionResult(AccessDeniedError(refused.code, refused.message))
                )
            # An access error is 403 whatever the model says (it is absent from some), and
            # carries a request id as every AWS answer does (Step Functions quotes it in a
            # task's cause: without one its Lambda task failed with KeyError instead).
            headers["status"] = "403"
            headers.setdefault("x-amzn-RequestId", str(uuid.uuid4()))
            return 403, headers, body

    BaseResponse.call_action = call_action_or_refuse  # type: ignore[method-assign]


_LOG_LOCK = threading.Lock()


def enforce_iam_for_assumed_roles() -> None:
    """Gap: moto evaluates no request's policies unless told to evaluate every request's
    (see the module): requests signed with a role's temporary credentials are evaluated."""
    from urllib.parse import urlparse

    from moto.core.authorization import ActionAuthenticatorMixin

    def authenticate_and_authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        match = _ACCESS_KEY.search(self.headers.get("Authorization") or "")
        if not match:
            return
        assumed = _assumed_role_of(match.group(1))
        if assumed is None:
            return  # the operator's own credentials: not evaluated (see the module)
        region, service = match.group(2), match.group(3)
        service = IAM_PREFIXES.get(service, service)
        # moto's own checks first: the signature, and a session token that goes with the key.
        checker = iam_request_cls(
            account_id=self.current_account,
            method=self.method,
            path=self.raw_path + (f"?{query}" if (query := urlparse(self.uri).query) else ""),
            data=self.data,
            body=self.raw_body,
            headers=self.headers,
            action=self._get_action(),
        )
        checker.check_signature()
        request = _request_of(self, assumed, service, region)
        bucket_policy = _bucket_policy(self) if service == "s3" else None
        try:
            authorize(request, bucket_policy)
            if service == "s3" and request.action == "s3:GetObject":
                _missing_key_needs_list_bucket(self, request, bucket_policy)
        except AccessDenied as denied:
            with _LOG_LOCK:
                print(f"local AWS: AccessDenied: {denied}", flush=True)
            _refuse(service, str(denied))

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate_and_authorize  # type: ignore[method-assign]

    _remember_s3_keys()
    _answer_refusals()


class InvalidSignature(AccessDenied):
    """The request's signature does not match its credentials' secret."""


def authorize_signed(
    method: str, path: str, headers: Mapping[str, str], body: bytes, action: str, resource: str
) -> None:
    """The same evaluation as `enforce_iam_for_assumed_roles`, for a request the local AWS
    serves outside moto (`local_aws.sagemaker_runtime`): a role's temporary credentials
    must sign it correctly and their role must allow `action` on `resource`."""
    from moto.iam.access_control import IAMRequest
    from werkzeug.exceptions import HTTPException

    match = _ACCESS_KEY.search(headers.get("Authorization") or "")
    assumed = _assumed_role_of(match.group(1)) if match else None
    if match is None or assumed is None:
        return  # the operator's own credentials: not evaluated (see the module)
    region = match.group(2)
    try:
        IAMRequest(
            account_id=assumed.role_arn.split(":")[4],
            method=method,
            path=path,
            data={},
            body=body,
            headers=dict(headers),
            action=action.split(":", 1)[1],
        ).check_signature()
    except HTTPException as error:
        raise InvalidSignature(str(error.description)) from None
    context = {
        "aws:SecureTransport": "true",
        "aws:PrincipalArn": assumed.role_arn,
        "aws:PrincipalAccount": assumed.role_arn.split(":")[4],
        "aws:RequestedRegion": region,
    }
    try:
        authorize(Request(assumed.role_arn, action, resource, context))
    except AccessDenied as denied:
        with _LOG_LOCK:
            print(f"local AWS: AccessDenied: {denied}", flush=True)
        raise


def _bucket_policy(response: Any) -> str | None:
    bucket_name = getattr(response, "bucket_name", None) or response.data.get("BucketName")
    if not bucket_name:
        return None
    try:
        bucket = response.backend.get_bucket(bucket_name)
    except Exception:  # no such bucket: S3 answers that after authorization
        return None
    return None if bucket.policy is None else bucket.policy.decode()


def _missing_key_needs_list_bucket(
    response: Any, request: Request, bucket_policy: str | None
) -> None:
    """S3 answers a missing key with 403 AccessDenied when the caller may not list the
    bucket, so that a caller cannot learn which keys exist; 404 only with s3:ListBucket."""
    bucket_name = getattr(response, "bucket_name", None) or response.data.get("BucketName")
    key = getattr(response, "_local_aws_key", None)
    try:
        bucket = response.backend.get_bucket(bucket_name)
    except Exception:
        return
    if key is None or key in bucket.keys:
        return
    # The permission S3 checks carries no prefix: a ListBucket allowed only for some
    # s3:prefix values does not reveal a missing key.
    listing = Request(
        request.principal_arn,
        "s3:ListBucket",
        f"arn:aws:s3:::{bucket_name}",
        {k: v for k, v in request.context.items() if k != "s3:prefix"},
    )
    authorize(listing, bucket_policy)


def _remember_s3_keys() -> None:
    """moto's S3 authorizes key requests with the key's ARN but keeps the key name out of
    the request's data; remember it for `_request_of`."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.s3.responses import S3Response

    authorize_s3 = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action

    def authorize_s3_action(
        self: Any, bucket_name: str | None = None, key_name: str | None = None
    ) -> None:
        self._local_aws_key = key_name
        authorize_s3(self, bucket_name, key_name)

    S3Response._authenticate_and_authorize_s3_action = authorize_s3_action  # type: ignore[method-assign]


def bucket_permission(policy: str, action: str, resource: str) -> Decision:
    """A bucket policy's decision for a request whose principal moto does not tell:
    statements naming a principal other than everyone are left to `authorize`."""
    parsed = json.loads(policy)
    statements = parsed.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements
    anyone = [s for s in statements if s.get("Principal") in ("*", {"AWS": "*"})]
    request = Request("*", action, resource, {"aws:SecureTransport": "true"})
    return evaluate([{**parsed, "Statement": anyone}], request, resource_policy=True)


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


PATCHES = (enforce_iam_for_assumed_roles, step_functions_act_as_their_role)
