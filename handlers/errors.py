"""The errors a handler raises on purpose, named for the state machine.

Lambda reports an unhandled exception's class name as its `errorType`, which is what a
Catch or Retry in statemachine/ matches: a class here is renamed only with them.
"""


class WorkflowError(Exception):
    """Base of the errors a handler raises on purpose (never caught by a handler)."""


class InvalidEvent(WorkflowError):
    """The event is not a workflow event, or lacks what this handler needs."""


class ConfigurationError(WorkflowError):
    """An environment variable the handler needs is missing or malformed."""


class ImageTooLarge(WorkflowError):
    """The image is over MAX_IMAGE_BYTES."""


class NotAnImage(WorkflowError):
    """The bytes are not one of the accepted formats (contract.images.FORMATS)."""
