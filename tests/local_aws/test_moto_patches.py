"""local_aws/moto_patches.py names every change the local AWS makes to moto: the moto
version they were written against is the one installed and pinned, every assignment into
moto in local_aws/ (read from the source) is listed there, and every listed one is made
where the list says, into an object this moto still has. Reading source, no server."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path

from local_aws import moto_patches
from tests.conftest import REPO_ROOT
from tests.local_aws.moto_assignments import COMPUTED, assignments_into_moto


def _every_patch() -> str:
    return "\n".join(
        f"  - {patch.name}: {', '.join(patch.patched)} ({patch.why})"
        for patch in moto_patches.PATCHES
    )


def _listed() -> set[tuple[str, str]]:
    return {(patch.name, target) for patch in moto_patches.PATCHES for target in patch.patched}


def test_the_installed_moto_is_the_version_the_patches_were_written_against() -> None:
    installed = importlib.metadata.version("moto")
    assert installed == moto_patches.MOTO_VERSION, (
        f"moto {installed} is installed; local_aws/moto_patches.py's patches were written "
        f"against moto {moto_patches.MOTO_VERSION}. Re-check each of them against the new "
        "moto (its source, and the tests named in docs/local-mode.md), then set "
        f"MOTO_VERSION:\n{_every_patch()}"
    )


def test_requirements_pin_the_moto_version_the_patches_were_written_against() -> None:
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    pinned = re.search(r"^moto\[[^\]]*\]==(\S+)", requirements, re.MULTILINE)
    assert pinned is not None, "requirements.txt pins no moto version"
    assert pinned.group(1) == moto_patches.MOTO_VERSION, (
        f"requirements.txt pins moto {pinned.group(1)}; the patches were written against "
        f"{moto_patches.MOTO_VERSION}. Re-check each of them, then set MOTO_VERSION:\n"
        f"{_every_patch()}"
    )


def test_every_assignment_into_moto_in_local_aws_is_listed() -> None:
    found = assignments_into_moto(REPO_ROOT / "local_aws")
    assert len(found) >= 40, "the source scan finds the patches it is meant to find"
    unnamed = [a for a in found if a.target.endswith(COMPUTED)]
    assert not unnamed, f"name the attribute literally (setattr with a literal): {unnamed}"
    listed = _listed()
    missing = [
        f"{a.installer} assigns {a.target} (line {a.line})"
        for a in found
        if (a.installer, a.target) not in listed
    ]
    assert not missing, (
        "assignments into moto that local_aws/moto_patches.py does not list (add a Patch "
        "naming the function, the moto object and why):\n" + "\n".join(missing)
    )


def test_every_listed_patch_assigns_what_it_names_where_it_says() -> None:
    """A listed target that the function does not assign is a stale entry; a target in
    words (not a dotted path) is a patch that assigns nothing (a subclass moto finds)."""
    found = {(a.installer, a.target) for a in assignments_into_moto(REPO_ROOT / "local_aws")}
    stale = [
        f"{name}: {target}"
        for name, target in sorted(_listed())
        if " " not in target and (name, target) not in found
    ]
    assert not stale, "listed but not assigned there:\n" + "\n".join(stale)
    installers = [patch.name for patch in moto_patches.PATCHES]
    assert len(installers) == len(set(installers)), "each patch is installed once"


def test_every_patched_moto_object_exists_in_the_installed_moto() -> None:
    """What each patch assigns into (the class, module or dict that owns the attribute)
    is still where the patch looks for it; the attribute itself may be one moto lacks
    (UpdateEndpoint, StartSyncExecution are added)."""
    gone = []
    for patch in moto_patches.PATCHES:
        for target in patch.patched:
            path = target.split(" ")[0].removesuffix("[...]")
            owner = path if target.split(" ")[0].endswith("[...]") else path.rsplit(".", 1)[0]
            if _resolve(owner) is None:
                gone.append(f"{patch.name}: {owner}")
    assert not gone, "moto objects the patches assign into are gone:\n" + "\n".join(gone)


def _resolve(dotted: str) -> object | None:
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(found, attribute):
                return None
            found = getattr(found, attribute)
        return found
    return None


def test_the_server_installs_every_patch_through_the_list() -> None:
    """One place applies them: serve calls install_all, no module keeps a list of its own."""
    server = (REPO_ROOT / "local_aws" / "server.py").read_text()
    assert "moto_patches.install_all()" in server
    own_lists = [
        path.name
        for path in Path(REPO_ROOT / "local_aws").rglob("*.py")
        if re.search(r"^PATCHES\b", path.read_text(), re.MULTILINE)
        and path.name != "moto_patches.py"
    ]
    assert not own_lists, f"modules with a patch list of their own: {own_lists}"


def test_local_mode_md_names_every_patch_and_the_moto_version() -> None:
    """docs/local-mode.md's checklist lists, per service, what is patched: every entry."""
    page = (REPO_ROOT / "docs" / "local-mode.md").read_text()
    assert f"moto {moto_patches.MOTO_VERSION}" in page
    unnamed = [p.name for p in moto_patches.PATCHES if p.install.__qualname__ not in page]
    assert not unnamed, f"patches docs/local-mode.md does not name: {unnamed}"
