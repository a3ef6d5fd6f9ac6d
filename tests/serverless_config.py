"""serverless.yml as written, with its `resources:` includes followed, for the tests that
read what the stack declares without running the Serverless CLI (tests/statemachine/
packaging.py runs it). Variables (`${param:...}`, `${self:...}`) stay unresolved.

serverless.yml's `resources:` is a list of `${file(resources/NAME.yml)}` entries, each file a
mapping of CloudFormation sections (`Resources`, `Outputs`, `Parameters`, `extensions`);
osls merges the list into one mapping (its Service.mergeArrays). Here the same merge
refuses a logical id or output declared in two files, which osls would silently merge into
one resource.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVERLESS_YML = REPO_ROOT / "serverless.yml"
FILE_INCLUDE = re.compile(r"\$\{file\((?P<path>[^)]+)\)\}")


def resource_files() -> list[Path]:
    """The files serverless.yml's `resources:` includes, in its order."""
    service = yaml.safe_load(SERVERLESS_YML.read_text())
    files = []
    for entry in service["resources"]:
        match = FILE_INCLUDE.fullmatch(entry) if isinstance(entry, str) else None
        assert match, f"resources: entry {entry!r} is not a ${{file(...)}} include"
        files.append(REPO_ROOT / match["path"])
    return files


def merged_resources() -> dict[str, dict[str, Any]]:
    """The `resources:` section as osls merges it: each CloudFormation section's entries
    from every included file; an entry named in two files is an error."""
    merged: dict[str, dict[str, Any]] = {}
    for path in resource_files():
        for section, entries in yaml.safe_load(path.read_text()).items():
            into = merged.setdefault(section, {})
            twice = set(into) & set(entries)
            assert not twice, f"{path.name} declares {section} {sorted(twice)} again"
            into.update(entries)
    return merged


def declared_service() -> dict[str, Any]:
    """serverless.yml, its `resources:` merged from the files it includes."""
    service: dict[str, Any] = yaml.safe_load(SERVERLESS_YML.read_text())
    service["resources"] = merged_resources()
    return service
