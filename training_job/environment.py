"""Environment variables set for a block and restored after it.

A command run in-process (the tests, the benchmarks) must not change its caller's
environment: the CLI's region, the tests' local AWS and the benchmark's handler
variables all go through `overridden`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def overridden(variables: Mapping[str, str]) -> Iterator[None]:
    """`os.environ` with `variables` set inside the block; each restored (or removed,
    if it was unset) afterwards."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
