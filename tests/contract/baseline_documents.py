"""baseline.json documents of a known, small content, for the tests of its reader
(test_baseline.py) and of what reads a parsed baseline (the canary alarms)."""

from __future__ import annotations

from typing import Any


def document(version: int = 2, **changes: Any) -> dict[str, Any]:
    """A version-`version` document of three validation images and two classes."""
    base: dict[str, Any] = {
        "format_version": version,
        "count": 3,
        "classes": ["bicycle", "motorcycle"],
        "confidence_threshold": 0.9,
        "input_statistics": {"brightness": [0.1, 0.2, 0.3]},
        "upload_bytes": [100, 200, 300],
        "content_types": {"image/png": 3},
        "class_counts": {"bicycle": 2, "motorcycle": 1},
        "probabilities": [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]],
        "confidences": [0.9, 0.6, 0.8],
        "embeddings_file": "baseline_embeddings.npy",
        "embedding_dim": 4,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not ...}
