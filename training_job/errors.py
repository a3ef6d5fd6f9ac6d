"""How the command line shows a value in an error message: bounded and readable.

Arguments and files come from users and from the network; a message that echoes one must
stay one readable line, whatever its length, and must not show an object's repr (which
names a memory address, not the thing). The training_job commands show every value they
did not make through `bounded`, and print every message through `one_line`.
"""

from __future__ import annotations

import re
from pathlib import PurePath

MAX_SHOWN_CHARACTERS = 80


def bounded(value: object, limit: int = MAX_SHOWN_CHARACTERS) -> str:
    """`value` quoted as in code (`'name'`), cut to about `limit` characters with its full
    length said; a file object by its name; any other object by its type."""
    if isinstance(value, PurePath):
        value = str(value)
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


MAX_MESSAGE_CHARACTERS = 500
_OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def one_line(message: str, limit: int = MAX_MESSAGE_CHARACTERS) -> str:
    """A message as the commands print it: one line, no memory addresses (a library's
    `<_io.BytesIO object at 0x...>` becomes `<_io.BytesIO>`), at most about `limit`
    characters."""
    text = _OBJECT_REPR.sub(r"<\1>", " ".join(message.split()))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
