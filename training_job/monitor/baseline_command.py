"""`monitor baseline`: write (or rebuild) a model's drift baseline beside it."""

from __future__ import annotations

import argparse

from contract.s3 import parse_s3_object_uri, parse_s3_prefix_uri
from training_job.monitor.baseline import ensure_baseline, newest_model
from training_job.monitor.exits import EXIT_OK, guarded


def run_baseline(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> int:
        if args.model_data:
            bucket, key = parse_s3_object_uri(args.model_data)
        else:
            bucket, key = args.bucket, newest_model(args.bucket)
        images_prefix = None
        if args.images:
            images_bucket, images_prefix = parse_s3_prefix_uri(args.images)
            if images_bucket != bucket:
                raise ValueError("--images must be in the model's bucket")
        written, origin = ensure_baseline(
            bucket, key, args.data_prefix, images_prefix, args.rebuild
        )
        print(f"baseline {origin}: " + ", ".join(written))
        return EXIT_OK

    return guarded(body, args)
