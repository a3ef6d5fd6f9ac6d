"""Backfill throughput: photos per second of `python -m training_job backfill` over a prefix
of photos, against the per-photo workflow on the same local stack, with CPU per photo.

It builds the local stack as benchmarks/workflow_throughput.py does (the local AWS, the
test split staged, a quick model behind the local endpoint, the real serverless.yml
deployed: the image workflow and the backfill), then:

  photos     --photos copies of the 200 test photos under archive/bench-<id>/, each one
             varied (mirrored, cropped by a few pixels, re-encoded as JPEG at another
             quality) so that no two are the same object
  workflow   --executions of the per-photo workflow, closed loop, --concurrency clients
             (workflow_throughput's run_workflow)
  backfill   the command over the whole prefix: wall time, and the CPU time of every
             process of the stack (engine, Lambda workers, endpoint, client) per photo

and prints photos/s of each, the ratio (goal: at least 5x), the measured batch duration,
and the backfill's cost per million photos from it (training_job/cost/backfill.py;
goal: at most $2). The load average is printed: other processes share these CPUs.

    .venv/bin/python benchmarks/backfill_throughput.py [--photos 10000]
        [--executions 200] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_throughput import (
    DEFAULT_ARCHIVE,
    REPO_ROOT,
    Stack,
    local_stack,
    run_workflow,
    warm_up,
)

sys.path.insert(0, str(REPO_ROOT))
from training_job.cost.backfill import BatchUsage, backfill_cost_per_million
from training_job.cost.model import DEFAULT_PRICES, Prices

GOAL_RATIO = 5.0
GOAL_PER_MILLION = 2.0
INSTANCE_TYPE = "ml.m5.xlarge"  # deploy's default instance type on AWS
LAMBDA_MEMORY_GB = 0.25  # serverless.yml's backfill function


def varied(original: bytes, index: int) -> bytes:
    """Copy `index` of a photo: mirrored on odd rounds, cropped by 0-3 pixels, JPEG at a
    quality from 70 to 95: the same subject, never the same bytes."""
    image = Image.open(io.BytesIO(original)).convert("RGB")
    round_ = index // 200
    if round_ % 2:
        image = ImageOps.mirror(image)
    crop = round_ % 4
    if crop:
        image = image.crop((crop, crop, image.width - crop, image.height - crop))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70 + round_ % 26)
    return buffer.getvalue()


def make_photos(stack: Stack, prefix: str, count: int) -> None:
    s3 = stack.client("s3")
    originals = [s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read() for key in stack.keys]

    def put(index: int) -> None:
        body = varied(originals[index % len(originals)], index)
        s3.put_object(Bucket=stack.bucket, Key=f"{prefix}{index:06d}.jpg", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(tqdm(pool.map(put, range(count)), total=count, desc="photos", leave=False))


def run_backfill(stack: Stack, prefix: str) -> tuple[float, dict[str, float], dict[str, object]]:
    """Wall seconds, CPU seconds by process, and the command's JSON summary."""
    command = [sys.executable, "-m", "training_job", "backfill", "--json"]
    command += ["--images", f"s3://{stack.bucket}/{prefix}"]
    command += ["--results", str(stack.work / "backfill.jsonl")]
    cpu_before = stack.cpu_seconds()
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=stack.environment(), capture_output=True, text=True,
        timeout=7200,
    )  # fmt: skip
    wall = time.perf_counter() - started
    cpu_after = stack.cpu_seconds()
    if result.returncode != 0:
        raise RuntimeError(f"backfill failed:\n{result.stdout}\n{result.stderr}")
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    # The client's own CPU is the subprocess's, not this process's.
    cpu["client"] = 0.0
    return wall, cpu, json.loads(result.stdout)


def batch_seconds(stack: Stack) -> float:
    """The median child execution's duration, from the map run's exported results."""
    s3 = stack.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.bucket, Prefix="backfills/")
    files = [o["Key"] for o in listed.get("Contents", []) if "SUCCEEDED_" in o["Key"]]
    durations = []
    for key in files:
        for child in json.loads(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()):
            stop, start = child["StopDate"], child["StartDate"]
            durations.append(
                (datetime.fromisoformat(stop) - datetime.fromisoformat(start)).total_seconds()
            )
    durations.sort()
    return durations[len(durations) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=10_000, help="photos to backfill")
    parser.add_argument("--executions", type=int, default=200, help="per-photo workflow executions")
    parser.add_argument("--concurrency", type=int, default=16, help="workflow clients")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--model-steps", type=int, default=60)
    parser.add_argument("--endpoint-workers", type=int, default=1)
    args = parser.parse_args(argv)
    if not 1 <= args.photos <= 100_000 or not 1 <= args.executions <= 10_000:
        parser.error("--photos must be 1..100000 and --executions 1..10000")
    if not args.archive.is_file():
        parser.error(f"no archive at {args.archive} (see ../shared/data/README.md)")
    load_before = os.getloadavg()
    with local_stack(args.archive, args.model_steps, args.endpoint_workers) as stack:
        prefix = f"archive/bench-{uuid.uuid4().hex[:8]}/"
        make_photos(stack, prefix, args.photos)
        warm_up(stack, args.concurrency)
        workflow = run_workflow(stack, args.concurrency, args.executions)
        wall, cpu, summary = run_backfill(stack, prefix)
        child = batch_seconds(stack)
    load_after = os.getloadavg()
    backfill_rate = args.photos / wall
    ratio = backfill_rate / workflow.per_second
    workflow_cpu = sum(workflow.cpu.values()) / workflow.executions
    backfill_cpu = sum(cpu.values()) / args.photos
    print()
    print(f"{'':28} {'photos':>8} {'photos/s':>9} {'CPU s/photo':>12}")
    print(
        f"{'workflow (one execution)':28} {workflow.executions:>8} "
        f"{workflow.per_second:>9.1f} {workflow_cpu:>12.4f}"
    )
    name = "backfill (Distributed Map)"
    print(f"{name:28} {args.photos:>8} {backfill_rate:>9.1f} {backfill_cpu:>12.4f}")
    print(f"outcomes: {summary['outcomes']}")
    print(
        "CPU by process, backfill: "
        + ", ".join(
            f"{name} {seconds / args.photos * 1000:.2f} ms" for name, seconds in cpu.items()
        )
    )
    usage = BatchUsage(
        photos=100,
        lambda_seconds=child,
        lambda_memory_gb=LAMBDA_MEMORY_GB,
        child_seconds=child,
        instance_type=INSTANCE_TYPE,
    )
    lines = backfill_cost_per_million(usage, Prices.read(DEFAULT_PRICES))
    print(f"\nbackfill cost per million photos (median batch {child:.2f} s, measured here):")
    for line in lines:
        print(f"  {line.service:20} ${line.per_million:8.3f}  {line.what}")
    total = sum(line.per_million for line in lines)
    print(f"  {'total':20} ${total:8.3f}")
    print(
        f"\nload average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"backfill / workflow photos per second: {ratio:.1f}x "
        f"({'meets' if ratio >= GOAL_RATIO else 'misses'} the {GOAL_RATIO:g}x goal); "
        f"${total:.2f} a million ({'meets' if total <= GOAL_PER_MILLION else 'misses'} "
        f"the ${GOAL_PER_MILLION:g} goal)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
