"""What one request's image costs to decode, at the sizes imaging.py's limits admit.

    .venv/bin/python benchmarks/decode_cost.py

Each image is decoded by `imaging.decode` in a fresh process, which reports its CPU time
and how much its peak memory grew: the numbers behind the limits in
training_job/code/imaging.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

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


CASES: dict[str, Callable[[], bytes]] = {
    "JPEG 4032x3024 phone photo, EXIF orientation": phone_photo,
    "JPEG 6000x4000 progressive (the JPEG limit)": lambda: encoded(
        photo(6000, 4000), "JPEG", quality=90, progressive=True
    ),
    "PNG 3840x2160 RGBA (the PNG limit)": lambda: encoded(photo(3840, 2160).convert("RGBA"), "PNG"),
    "PNG 6320x6320 RGBA": declared_png,
}


def main() -> int:
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
            print(f"{name}: {len(data) / 1e6:.2f} MB body, {result.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
