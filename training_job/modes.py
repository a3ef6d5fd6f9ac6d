"""One rule for the commands that run in two modes (train, deploy): an option of one
--mode given with the other is a usage error, never silently ignored."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from training_job.errors import UsageError


@dataclass(frozen=True)
class ModeOption:
    dest: str
    flag: str
    default: Any


def options_of(group: argparse._ArgumentGroup, shared: tuple[str, ...] = ()) -> list[ModeOption]:
    """The options added to `group` (a mode's argument group), less those in `shared`."""
    return [
        ModeOption(action.dest, action.option_strings[0], action.default)
        for action in group._group_actions
        if action.dest not in shared
    ]


def refuse_other_modes(args: argparse.Namespace, by_mode: dict[str, list[ModeOption]]) -> None:
    """A UsageError naming the first option that belongs to a mode other than args.mode
    (an option left at its default was not given)."""
    for mode, options in by_mode.items():
        if mode == args.mode:
            continue
        for option in options:
            if getattr(args, option.dest) != option.default:
                raise UsageError(f"{option.flag} applies to --mode {mode} only")
