"""The image formats the workflow accepts, defined once.

serialize and classify (Lambda) and inference.py (the endpoint) all accept exactly the
formats listed here, recognised by their magic bytes, up to MAX_IMAGE_BYTES.
"""

from __future__ import annotations

# SageMaker's InvokeEndpoint refuses request bodies over 6 MB and Lambda's synchronous
# invocation payloads over 6 MB; 5 MiB leaves room for both, and covers a phone photo
# (4032x3024 JPEG, typically 2-4 MB).
MAX_IMAGE_BYTES = 5 * 1024 * 1024


class ImageFormat:
    # A plain class, not a dataclass: `dataclasses` alone adds ~5 ms to a Lambda cold start.
    def __init__(self, name: str, content_type: str, signatures: tuple[bytes, ...]) -> None:
        self.name = name
        self.content_type = content_type
        self.signatures = signatures


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("PNG", "image/png", (b"\x89PNG\r\n\x1a\n",)),
    ImageFormat("JPEG", "image/jpeg", (b"\xff\xd8\xff",)),
)

# What a request to the endpoint may declare: the formats' own types, and the generic
# type SageMaker's built-in image algorithms use (the bytes must still be one of FORMATS).
GENERIC_CONTENT_TYPE = "application/x-image"
CONTENT_TYPES: tuple[str, ...] = (
    *(image_format.content_type for image_format in FORMATS),
    GENERIC_CONTENT_TYPE,
)
FORMAT_NAMES = " or ".join(image_format.name for image_format in FORMATS)
# How many leading bytes `content_type_of` needs: a reader that only checks the format
# (serialize, for an image it leaves in S3) fetches no more than this.
SIGNATURE_BYTES = max(len(s) for image_format in FORMATS for s in image_format.signatures)


def content_type_of(data: bytes) -> str | None:
    """The content type of an accepted image from its magic bytes, or None."""
    for image_format in FORMATS:
        if data.startswith(image_format.signatures):
            return image_format.content_type
    return None
