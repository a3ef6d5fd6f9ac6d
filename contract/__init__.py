"""The workflow's data contract, shared by every side that reads or writes it.

Standard library only: this package is copied into each Lambda package
(`package.patterns` in serverless.yml) and into the SageMaker code directory (the
estimator's `dependencies`, and `code/` inside model.tar.gz), so the handlers, the
endpoint and training read one definition instead of copies.
"""

import os

SHOWN_CHARACTERS = 80  # characters of a value echoed in an error message


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """`value` for an error message, as in code (`'name'`), cut to about `limit` characters
    with its full length said; a file object by its name, any other object by its type.

    What errors echo comes from users, files and the network: a hostile 100 KB bucket name
    must not reach logs and execution histories in full, nor a memory address in a repr."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str | bytes | int | float):
        text = repr(value)
    elif isinstance(getattr(value, "name", None), str):  # an open file
        text = repr(value.name)  # type: ignore[attr-defined]
    elif type(value).__repr__ is object.__repr__:
        return f"a {type(value).__name__}"
    else:
        text = repr(value)
    if len(text) <= limit:
        return text
    total = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[:limit]}... ({total} characters)"
