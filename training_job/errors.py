"""How the command line shows a value in an error message: bounded and readable.

Arguments and files come from users and from the network; a message that echoes one must
stay one readable line, whatever its length, and must not show an object's repr (which
names a memory address, not the thing). The training_job commands show every value they
did not make through `contract.shown`, and print every message through `one_line`.
"""

from __future__ import annotations

import re

MAX_MESSAGE_CHARACTERS = 500
_OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def one_line(message: str, limit: int = MAX_MESSAGE_CHARACTERS) -> str:
    """A message as the commands print it: one line, no memory addresses (a library's
    `<_io.BytesIO object at 0x...>` becomes `<_io.BytesIO>`), at most about `limit`
    characters."""
    text = _OBJECT_REPR.sub(r"<\1>", " ".join(message.split()))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class CommandError(Exception):
    """A command that cannot go on, with a message for the user. `python -m training_job`
    prints it once, as `python -m training_job COMMAND: error: MESSAGE` (argparse's own
    form), and exits with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:  # a job's own exit status, passed on
            self.exit_code = exit_code


class UsageError(CommandError):
    """A command line that cannot mean anything (a flag of the other --mode, a bad name):
    exit status 2, as argparse's own usage errors."""

    exit_code = 2
