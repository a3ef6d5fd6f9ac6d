"""The test metrics a training job wrote (training_job/code/train.py's metrics.json), as
the short table `train` prints in both modes."""

from __future__ import annotations

from typing import Any


def format_metrics(metrics: dict[str, Any], job_seconds: float | None = None) -> str:
    """The test metrics that training_job/code/train.py writes, as a short table."""
    lines = [
        "test metrics:",
        f"  accuracy  {_number(metrics.get('test_accuracy'))}",
        f"  ECE       {_number(metrics.get('expected_calibration_error'))}",
        f"  {'class':<14}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>9}",
    ]
    per_class = metrics.get("per_class")
    for name, row in (per_class if isinstance(per_class, dict) else {}).items():
        if isinstance(row, dict):
            lines.append(
                f"  {name!s:<14}{_number(row.get('precision')):>10}"
                f"{_number(row.get('recall')):>10}{_number(row.get('f1')):>10}"
                f"{row.get('support', '')!s:>9}"
            )
    matrix = metrics.get("confusion_matrix")
    classes = metrics.get("classes")
    if isinstance(matrix, list) and isinstance(classes, list) and len(classes) == len(matrix):
        lines.append("  confusion matrix (rows: true class, columns: predicted)")
        lines.append("  " + " " * 14 + "".join(f"{str(name)[:10]:>11}" for name in classes))
        for name, row in zip(classes, matrix, strict=True):
            cells = row if isinstance(row, list) else [row]
            lines.append(f"  {str(name)[:13]:<14}" + "".join(f"{cell!s:>11}" for cell in cells))
    reviewed = metrics.get("reviewed")
    if isinstance(reviewed, dict):
        lines.append(
            f"  reviewed photos added  {reviewed.get('added')!s} from {reviewed.get('manifest')!s} "
            f"(sha256 {reviewed.get('sha256')!s})"
        )
    lines.append(f"  training seconds  {_number(metrics.get('training_seconds'), 1)}")
    if job_seconds is not None:
        lines.append(f"  job seconds       {_number(job_seconds, 1)}")
    return "\n".join(lines)


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    return f"{value:.{digits}f}"
