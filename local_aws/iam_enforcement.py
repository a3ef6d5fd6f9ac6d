"""IAM enforced in moto's request path: the workflow's own identities are held to their
policies.

- `enforce_iam_for_assumed_roles` makes every request signed with a role's temporary
  credentials (`local_aws.service_roles`) pass `local_aws.iam.authorize`: an explicit Deny
  in the role's policies or the bucket policy refuses, an Allow in either admits, anything
  else is AccessDenied, answered in the service's own protocol (`answer_refusals`). S3
  answers a missing key with AccessDenied, not NoSuchKey, when the caller may not
  s3:ListBucket, as S3 does.
- Requests signed with any other credentials (the operator's `testing` keys that the CLI,
  `sls deploy` and the tests use: AWS's account administrator) are not evaluated.
- `authorize_signed` is the same evaluation for a request served outside moto.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

from local_aws.iam import AccessDenied, Request, authorize
from local_aws.iam_requests import IAM_PREFIXES, SIGNED_CREDENTIAL, assumed_role_of, request_of

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


def answer_refusals() -> None:
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
        match = SIGNED_CREDENTIAL.search(self.headers.get("Authorization") or "")
        if not match:
            return
        assumed = assumed_role_of(match.group(1))
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
        request = request_of(self, assumed, service, region)
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

    match = SIGNED_CREDENTIAL.search(headers.get("Authorization") or "")
    assumed = assumed_role_of(match.group(1)) if match else None
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


def remember_s3_keys() -> None:
    """moto's S3 authorizes key requests with the key's ARN but keeps the key name out of
    the request's data; remember it for `request_of`."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.s3.responses import S3Response

    authorize_s3 = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action

    def authorize_s3_action(
        self: Any, bucket_name: str | None = None, key_name: str | None = None
    ) -> None:
        self._local_aws_key = key_name
        authorize_s3(self, bucket_name, key_name)

    S3Response._authenticate_and_authorize_s3_action = authorize_s3_action  # type: ignore[method-assign]
