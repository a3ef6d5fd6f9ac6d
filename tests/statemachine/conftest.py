"""The statemachine tests run the real states against the stand-in SageMaker Runtime
server the handler tests use (tests/handlers/conftest.py)."""

from tests.handlers.conftest import runtime_server

__all__ = ["runtime_server"]
