"""Where the code came from: the commit a training job, a model version and the serving
image record (`train` gives it to the job as SCONES_GIT_COMMIT, `image build` as a build
argument)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The commit the code came from, `-dirty` when tracked files differ from it, or
    `unknown: <why>` (no git, not a repository) so a reader sees why there is none."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except FileNotFoundError:
        return "unknown: git is not installed"
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown: git failed ({type(error).__name__})"
    commit = head.stdout.strip()
    if head.returncode != 0 or not commit:
        return f"unknown: {REPO_ROOT.name} is not a git repository with a commit"
    return f"{commit}-dirty" if dirty else commit
