"""What a variant's captures are judged against (its model's baseline), which variants
are judged, and the analyser that judges them: shared by `monitor report` and `check`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from contract.s3 import parse_s3_object_uri
from training_job import model_code
from training_job.monitor.analysis import WindowAnalyzer
from training_job.monitor.baseline import Baseline, BaselineError, fetch_model, load_baseline
from training_job.monitor.captures import CaptureSource, CaptureSourceError, read_labels
from training_job.monitor.drift_monitor import DriftMonitor
from training_job.monitor.embedding import Embedder
from training_job.monitor.variants import (
    PRODUCTION,
    SHADOW,
    VariantCaptures,
    model_for_variant,
    split_by_variant,
)


def reference_for(
    args: argparse.Namespace, workdir: Path, captures: VariantCaptures
) -> tuple[Baseline, Any, Any, str, Any]:
    """The baseline `captures` are judged against (the answering version's, unless
    --model-dir or --model-data names one), the model that embeds captured images, a
    description of both, and the model's familiarity check (None for a version without)."""
    if args.model_dir is not None:
        model_dir = args.model_dir
        baseline = Baseline.from_dir(model_dir)
        where = str(model_dir)
    else:
        model_data = args.model_data or model_for_variant(
            captures.variant, args.model_group, captures.source.bucket
        )
        bucket, key = parse_s3_object_uri(model_data)
        into = workdir / captures.name  # a VariantName: letters, digits, hyphens
        into.mkdir()
        model_dir = fetch_model(bucket, key, into)
        baseline = load_baseline(bucket, key, model_dir)
        where = f"s3://{bucket}/{key}"
    try:
        net, config = model_code.model().load_model(model_dir)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise BaselineError(f"{where}: cannot load the model ({error})") from error
    if list(config.classes) != baseline.classes:
        raise BaselineError(f"{where}: the baseline's classes differ from the model's")
    # The unfamiliar share needs the version's own familiarity statistics (issue 23).
    return baseline, net, config, where, model_code.familiarity().load(model_dir)


def chosen_variants(args: argparse.Namespace, source: CaptureSource) -> list[VariantCaptures]:
    """The captures to judge, one entry per variant: --variant's, or those serving now."""
    found = split_by_variant(source) or [VariantCaptures(None, source, None)]
    if args.variant:
        named = [c for c in found if c.variant in args.variant]
        missing = sorted(set(args.variant) - {c.variant for c in named})
        if missing:
            there = ", ".join(c.name for c in found)
            raise CaptureSourceError(
                f"no captures of variant {', '.join(missing)} under {args.captures} "
                f"(variants there: {there})"
            )
        return named
    serving = [c for c in found if c.role in (None, PRODUCTION, SHADOW)]
    for retired in (c for c in found if c not in serving):
        print(
            f"note: variant {retired.name} is not on the endpoint now: not judged "
            "(--variant names it)"
        )
    return serving


def window_analyzer(
    args: argparse.Namespace, baseline: Baseline, net: Any, config: dict, familiarity: Any
) -> WindowAnalyzer:
    labels = read_labels(args.labels) if args.labels else None
    torch.set_num_threads(args.threads)
    embedder = Embedder(net, config, args.embedding_members)
    monitor = DriftMonitor(
        alpha=args.alpha,
        permutations=args.permutations,
        embedding_dimensions=embedder.dimensions,
    ).fit(baseline)
    return WindowAnalyzer(
        baseline,
        embedder,
        monitor,
        args.embedding_sample,
        labels,
        familiarity=familiarity,
    )


def note_missing_statistics(baseline: Baseline, analyzer: WindowAnalyzer) -> None:
    """A baseline written before the colour moments existed is still used, without them."""
    missing = [name for name in analyzer.profile.STATISTICS if name not in baseline.statistics]
    if missing:
        print(
            f"note: the baseline has no {', '.join(missing)} (written by an older version, "
            "so those are not tested): `monitor baseline --rebuild` adds them"
        )
