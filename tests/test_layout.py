"""The layout stays readable: no module of the product (training_job, handlers, contract)
or of the emulator (local_aws) grows past 600 lines. A module that does several jobs is
split by job, each named for it (docs/architecture.md's table says which job is where)."""

from __future__ import annotations

from tests.conftest import REPO_ROOT

PACKAGES = ("training_job", "handlers", "contract", "local_aws")
MAX_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    sizes = {
        str(path.relative_to(REPO_ROOT)): path.read_text().count("\n")
        for package in PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
    }
    assert len(sizes) > 100  # the packages were found
    too_long = {module: lines for module, lines in sizes.items() if lines > MAX_LINES}
    assert too_long == {}, "split these by job"
