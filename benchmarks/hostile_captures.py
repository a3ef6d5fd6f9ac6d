"""Hostile capture objects: what reading one costs the capture reader that the scheduled
monitor (Lambda, 256 MB, 120 s) and `training_job monitor` share (contract/capture.py).

    .venv/bin/python benchmarks/hostile_captures.py

Each case runs in a fresh interpreter, so its peak resident memory is its own:
  zeros     a 1 MB gzip object that unpacks to 1 GiB of zeros (one endless line)
  newlines  a 1 MB gzip object that unpacks to 1 GiB of newlines (a billion blank lines)
  nested    one 8 MiB line of '[' (a RecursionError in the JSON parser)
  records   an object at the unpacked cap, 64 MiB of real 32x32 PNG capture records

Goals: every hostile object is refused or counted with peak memory far under the Lambda's
256 MB and well under a second of CPU; a full object of real records parses in a small
part of the time the monitor keeps in reserve for one object (RESERVED_MILLIS, 40 s).
CPU time, not wall time, is printed: this machine is shared.
"""

from __future__ import annotations

import io
import resource
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CASES = ("zeros", "newlines", "nested", "records")


def body_of(case: str) -> bytes:
    if case == "nested":
        return b"[" * (8 << 20) + b"\n"
    if case == "records":
        import numpy as np
        from PIL import Image

        from contract.capture import MAX_OBJECT_BYTES
        from training_job.serving.capture import build_record, encode_lines

        png = io.BytesIO()
        pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(png, format="PNG")
        line = encode_lines(
            [
                build_record(
                    input_body=png.getvalue(),
                    input_content_type="image/png",
                    output_body=b"[0.97, 0.03]",
                    output_content_type="application/json",
                    inference_time=datetime(2026, 11, 24, tzinfo=UTC),
                )
            ]
        )
        return line * (MAX_OBJECT_BYTES // len(line))
    piece = bytes(1 << 20) if case == "zeros" else b"\n" * (1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join([*(compressor.compress(piece) for _ in range(1024)), compressor.flush()])


def measure(case: str) -> str:
    from contract import capture

    body = body_of(case)
    chunks = [body[i : i + capture.READ_CHUNK_BYTES] for i in range(0, len(body), 1 << 20)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.process_time()
    counts: dict[str, int] = {}
    records = 0
    try:
        for _ in capture.read_object(chunks, counts):
            records += 1
        outcome = "read to its end"
    except capture.CaptureObjectError as error:
        outcome = f"refused: {error}"
    cpu = time.process_time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        f"| {case} | {len(body):,} | {outcome} | {records:,} | {capture.damaged(counts):,} | "
        f"{cpu:.2f} | {peak / 1024:.0f} ({before / 1024:.0f} before reading) |"
    )


def main() -> None:
    if len(sys.argv) == 2:
        print(measure(sys.argv[1]))
        return
    print("| case | bytes stored | outcome | records | damaged lines | CPU s | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case in CASES:
        result = subprocess.run(
            [sys.executable, __file__, case],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(REPO_ROOT)},
        )
        print(result.stdout.strip())


if __name__ == "__main__":
    main()
