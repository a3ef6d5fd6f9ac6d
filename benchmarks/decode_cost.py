"""What one request's image costs to decode, at the sizes imaging.py's limits admit and
for hostile encodings built to cost more per byte (scan bombs, chunk floods).

    .venv/bin/python benchmarks/decode_cost.py

Each image is decoded by `imaging.decode` in a fresh process, which reports its CPU time
and how much its peak memory grew: the numbers behind the limits in
training_job/code/imaging.py. The last line is the worst CPU cost of any one request
against an ordinary 12 MP phone photo's. The hostile files are built here, from nothing
(tests/training_job/code/test_imaging.py builds them the same way).
"""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# The scans of a JPEG's first image: each SOS segment and its entropy-coded data, up to
# the next marker that is not a stuffed zero or a restart marker.
_NEXT_MARKER = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")

CODE_DIR = Path(__file__).resolve().parents[1] / "training_job" / "code"
DECODE = """
import sys, time
sys.path.append(sys.argv[1])
import imaging
def peak_mb():
    # VmHWM, not ru_maxrss: the latter starts at the parent's peak after a fork.
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
data = open(sys.argv[2], "rb").read()
before = peak_mb()
started = time.process_time()
try:
    imaging.decode(data)
    outcome = "decoded"
except imaging.ImageDecodeError as error:
    outcome = f"refused ({type(error).__name__})"
cpu = time.process_time() - started
grown = peak_mb() - before
print(f"{outcome}, {cpu:.2f} s CPU, peak memory +{grown:.0f} MB")
print(cpu)
"""


def photo(width: int, height: int) -> Image.Image:
    """A gradient with sensor-like noise, so it compresses like a photo."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    pixels = x * 0.5 + y * 0.5 + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def phone_photo() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90° clockwise to display
    return encoded(photo(4032, 3024), "JPEG", quality=90, exif=exif)


def declared_png() -> bytes:
    """The reported case: a real PNG of 6320×6320 transparent pixels (~155 KB)."""
    return encoded(Image.new("RGBA", (6320, 6320)), "PNG")


def _scans(jpeg: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan of a JPEG: its SOS segment and entropy-coded data."""
    found, position = [], 2
    while jpeg[position + 1] != 0xD9:  # EOI
        length = int.from_bytes(jpeg[position + 2 : position + 4], "big")
        end = position + 2 + length
        if jpeg[position + 1] == 0xDA:  # SOS
            match = _NEXT_MARKER.search(jpeg, end)
            assert match is not None
            end = match.start()
            found.append((position, end))
        position = end
    return found


def scan_bomb_jpeg(scans: int, size: tuple[int, int] = (6000, 4000)) -> bytes:
    """A valid progressive JPEG of one flat colour whose smallest scan (a few bytes, but
    a pass over every block of the image for libjpeg) is repeated until it has `scans`."""
    flat = encoded(Image.new("RGB", size, (120, 130, 140)), "JPEG", progressive=True)
    found = _scans(flat)
    start, end = min(found, key=lambda scan: scan[1] - scan[0])
    last_end = found[-1][1]
    return flat[:last_end] + flat[start:end] * (scans - len(found)) + flat[last_end:]


def png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def chunk_flood_png(chunks: int) -> bytes:
    """A valid 64x64 PNG with `chunks` empty private ancillary chunks before its image data
    (decoders must skip chunks they do not know whose type starts in lower case)."""
    png = encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    first_data = png.index(b"IDAT") - 4
    return png[:first_data] + png_chunk(b"prVt") * chunks + png[first_data:]


CASES: dict[str, Callable[[], bytes]] = {
    "JPEG 4032x3024 phone photo, EXIF orientation": phone_photo,
    "JPEG 6000x4000 progressive (the JPEG limit)": lambda: encoded(
        photo(6000, 4000), "JPEG", quality=90, progressive=True
    ),
    "PNG 3840x2160 RGBA (the PNG limit)": lambda: encoded(photo(3840, 2160).convert("RGBA"), "PNG"),
    "PNG 6320x6320 RGBA": declared_png,
    "JPEG 6000x4000 progressive, 20,000 empty scans": lambda: scan_bomb_jpeg(20_000),
    "JPEG 6000x4000 progressive, 5,000 empty scans": lambda: scan_bomb_jpeg(5_000),
    "JPEG 6000x4000 progressive, 64 scans (the limit)": lambda: scan_bomb_jpeg(64),
    "PNG 64x64, 400,000 empty chunks": lambda: chunk_flood_png(400_000),
    "PNG 64x64, 4,090 empty chunks (at the limit)": lambda: chunk_flood_png(4_090),
}
ORDINARY = "JPEG 4032x3024 phone photo, EXIF orientation"


def main() -> int:
    cpu_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in CASES.items():
            path = Path(tmp) / "image"
            data = make()
            path.write_bytes(data)
            result = subprocess.run(
                [sys.executable, "-c", DECODE, str(CODE_DIR), str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            summary, cpu = result.stdout.strip().splitlines()
            cpu_seconds[name] = float(cpu)
            print(f"{name}: {len(data) / 1e6:.2f} MB body, {summary}")
    worst = max(cpu_seconds, key=cpu_seconds.__getitem__)
    ordinary = cpu_seconds[ORDINARY]
    print(
        f"worst request: {worst}: {cpu_seconds[worst]:.2f} s CPU, "
        f"{cpu_seconds[worst] / max(ordinary, 1e-3):.1f}x the phone photo's {ordinary:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
