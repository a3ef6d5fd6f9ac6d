"""What a request moto is about to serve asks for, in IAM's terms: the action, the resource
and the condition keys the local AWS knows for it (`local_aws.iam.CONTEXT_KEYS`), read
from the request as each service defines them.
"""

from __future__ import annotations

import re
from typing import Any

from local_aws.iam import ContextValue, Request

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


def assumed_role_of(access_key_id: str) -> Any:
    from moto.sts.models import sts_backends

    for account in list(sts_backends.keys()):
        for assumed in sts_backends[account]["aws"].assumed_roles:
            if assumed.access_key_id == access_key_id:
                return assumed
    return None


SIGNED_CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/")


def request_of(response: Any, assumed: Any, service: str, region: str) -> Request:
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
    expressions); for BatchGetItem, its keys and projection (`_batch_get_keys`);
    dynamodb:ReturnValues when the request has ReturnValues."""
    name = str(response._get_param("TableName") or "*")
    requested = response._get_param("RequestItems")
    if action == "dynamodb:BatchGetItem" and isinstance(requested, dict) and requested:
        # Evaluated per table on AWS; here the first table's (the project reads one).
        name, reads = next(iter(requested.items()))
        _batch_get_keys(reads, context)
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


def _batch_get_keys(reads: Any, context: dict[str, ContextValue]) -> None:
    """A BatchGetItem's dynamodb:LeadingKeys (every key's partition value) and
    dynamodb:Attributes (its ProjectionExpression's names, `#name` resolved)."""
    if not isinstance(reads, dict):
        return
    leading = []
    for key in reads.get("Keys") or []:
        partition = next(iter(key.values()), None) if isinstance(key, dict) else None
        if isinstance(partition, dict) and len(partition) == 1:
            leading.append(str(next(iter(partition.values()))))
    context["dynamodb:LeadingKeys"] = tuple(leading)
    names = reads.get("ExpressionAttributeNames") or {}
    projection = str(reads.get("ProjectionExpression") or "")
    if projection:
        attributes = [names.get(p.strip(), p.strip()) for p in projection.split(",")]
        context["dynamodb:Attributes"] = tuple(str(a).split(".")[0] for a in attributes)


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
