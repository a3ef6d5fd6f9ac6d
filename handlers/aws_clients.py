"""The AWS clients of the handlers that call AWS through botocore: one per service and
container, created on first use, so a warm container reuses its connections."""

from __future__ import annotations

from typing import Any

_clients: dict[str, Any] = {}


def aws_client(service: str, **config: Any) -> Any:
    """One client per AWS service and container, created on first use with `config`
    (botocore.config.Config's arguments: timeouts and retries; see classify and
    image_source for why theirs are what they are).

    botocore's session rather than boto3's: the same client without boto3's own imports,
    which cost ~40 ms of every cold start (benchmarks/handler_cold_start.py)."""
    client = _clients.get(service)
    if client is None:
        import botocore.config
        import botocore.session

        client = _clients[service] = botocore.session.get_session().create_client(
            service, config=botocore.config.Config(**config)
        )
    return client
