"""`python -m training_job monitor`: drift and performance monitoring of captured traffic."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    # Imported here so `python -m training_job --help` stays fast for the other commands.
    from training_job.monitor.cli import register as register_monitor

    register_monitor(subparsers)
