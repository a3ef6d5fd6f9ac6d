"""IAM policy evaluation in the local AWS: what a role's policies (and, for S3, the bucket
policy) decide for one request.

On AWS each Lambda function, the state machine and the EventBridge target act with
temporary credentials of their own role, and every call they make is evaluated against
that role's policies and, for S3, the bucket policy. moto can evaluate identity policies,
but not for a request's real resource outside S3, not their `Condition` blocks (a failed
condition even turns an Allow into a Deny), and not together with a bucket policy. So the
local AWS evaluates them here: `authorize` is the same-account evaluation of AWS (an
explicit Deny in the role's policies or the resource policy refuses, an Allow in either
admits, anything else is AccessDenied). Who is evaluated, and when, is
`local_aws.iam_enforcement`; the credentials services act with, `local_aws.service_roles`;
what a request moto serves is (action, resource, condition keys), `local_aws.iam_requests`.

Conditions are evaluated for the keys the local AWS knows for a request (`CONTEXT_KEYS`);
a condition on any other key, or with an operator not in `OPERATORS`, cannot be evaluated
here, and is never taken as satisfied: an Allow with it grants nothing and a Deny with it
denies (docs/local-mode.md lists them).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


def iam_backend(account_id: str) -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[account_id]["aws"]


def role_policies(role_arn: str) -> list[Any]:
    """The inline and attached policy documents of a role (moto's IAM)."""
    role = iam_backend(role_arn.split(":")[4]).get_role_by_arn(role_arn)
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


def bucket_permission(policy: str, action: str, resource: str) -> Decision:
    """A bucket policy's decision for a request whose principal moto does not tell:
    statements naming a principal other than everyone are left to `authorize`."""
    parsed = json.loads(policy)
    statements = parsed.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements
    anyone = [s for s in statements if s.get("Principal") in ("*", {"AWS": "*"})]
    request = Request("*", action, resource, {"aws:SecureTransport": "true"})
    return evaluate([{**parsed, "Statement": anyone}], request, resource_policy=True)
