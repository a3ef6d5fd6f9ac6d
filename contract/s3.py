"""S3 locations: the one parser of `s3://` URIs and the one normalisation of key prefixes.

Every command that takes an S3 location (stage, train, deploy, evaluate, monitor) and the
local training runner read it here, so the same text means the same place everywhere:

- `parse_s3_uri("s3://bucket/rest")` -> ("bucket", "rest"), `rest` as written (may be "");
  the bucket must be an S3 bucket name (3-63 of a-z 0-9 . -, starting and ending with a
  letter or digit), since no other can exist;
- `parse_s3_object_uri` also wants a key: not empty, not ending in "/";
- `parse_s3_prefix_uri` normalises the rest as a prefix;
- `normalise_prefix("runs/a")` -> "runs/a/": a prefix is written as its keys begin (no
  leading "/"), of parts made of letters, digits, "_", "." and "-" ("." and ".." are not
  parts, nor is an empty one), and gets one trailing "/"; "" is the bucket's root.
  Staging writes under it and training reads from it, so both take it by this rule.

Standard library only, like the rest of `contract`.
"""

from __future__ import annotations

import re

from contract import shown

S3_SCHEME = "s3://"
# S3's naming rules for buckets, dots included (older buckets have them).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9_.-]+")
# Room under the prefix for `train/<filename>` within S3's 1024-byte key limit.
MAX_PREFIX_CHARS = 512


class S3UriError(ValueError):
    """A location that is not an S3 URI or prefix by the rules above."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, rest) of `s3://bucket[/rest]`, rest as written."""
    if not uri.startswith(S3_SCHEME):
        raise S3UriError(f"not an s3:// URI: {shown(uri)}")
    bucket, _, rest = uri[len(S3_SCHEME) :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise S3UriError(f"invalid bucket name {shown(bucket)} in {shown(uri)}")
    return bucket, rest


def parse_s3_object_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`, naming one object."""
    bucket, key = parse_s3_uri(uri)
    if not key or key.endswith("/"):
        raise S3UriError(f"expected s3://BUCKET/KEY naming an object: {shown(uri)}")
    return bucket, key


def parse_s3_prefix_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket[/prefix[/]]`, the prefix normalised."""
    bucket, rest = parse_s3_uri(uri)
    try:
        return bucket, normalise_prefix(rest)
    except S3UriError as error:
        raise S3UriError(f"{error} (in {shown(uri)})") from None


def normalise_prefix(prefix: str) -> str:
    """`prefix` with one trailing "/" ("" stays ""), or S3UriError saying the rule."""
    if not prefix:
        return ""
    normalised = prefix if prefix.endswith("/") else prefix + "/"
    parts = normalised[:-1].split("/")
    if len(normalised) > MAX_PREFIX_CHARS or not all(
        _PREFIX_PART.fullmatch(part) and part not in (".", "..") for part in parts
    ):
        raise S3UriError(
            f"{shown(normalised)}: a prefix is parts of letters, digits, '_', '.' and '-' "
            f"joined by '/', with no leading '/' and no '.' or '..' part, at most "
            f"{MAX_PREFIX_CHARS} characters"
        )
    return normalised
