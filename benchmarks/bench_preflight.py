"""Wall time of the dataset pre-flight (``viewcoop_core.data.preflight``) at VeRi-776 size.

Run from the repository root (the package importable, e.g. ``pip install -e .``):
    python benchmarks/bench_preflight.py                     # 37,778 / 1,678 / 11,579 images
    python benchmarks/bench_preflight.py --masks             # plus a view mask per image
    python benchmarks/bench_preflight.py --scale 0.1 --threads 8

Writes a VeRi-layout folder of small JPEGs (a few distinct encoded images written under
every name; the checks read headers and end markers, so their cost hardly depends on the
image size) into ``--out`` (a temporary folder by default, removed afterwards), then
times three pre-flights: ``cold`` (no cache: every header and marker read), ``warm``
(every verdict from the cache: one stat per file) and ``one-changed`` (one file
rewritten since). The page cache is warm in all three (the files were just written), so
``cold`` is a lower bound for a first check on a network disk.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from viewcoop_core.config import DataConfig
from viewcoop_core.data.preflight import preflight

VERI_SPLITS = {"image_train": 37_778, "image_query": 1_678, "image_test": 11_579}


def encoded_images(count: int, size: int, seed: int) -> list[bytes]:
    """``count`` distinct JPEGs of ``size`` x ``size`` pixels (random colour blocks)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def encoded_mask(size: int) -> bytes:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4 : size // 2] = 1
    mask[size // 2 : 3 * size // 4] = 4
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_veri_layout(root: Path, scale: float, size: int, masks: bool) -> int:
    """A VeRi-like folder at ``root``; returns the number of images written."""
    images = encoded_images(16, size, seed=0)
    mask = encoded_mask(size)
    total = 0
    for split, count in VERI_SPLITS.items():
        folder = root / split
        folder.mkdir(parents=True)
        for i in range(total, total + max(1, round(count * scale))):
            name = f"{i % 776 + 1:04d}_c{i % 20 + 1:03d}_{i:08d}_0"  # unique over splits
            (folder / f"{name}.jpg").write_bytes(images[i % len(images)])
            if masks:
                (root / "masks").mkdir(exist_ok=True)
                (root / "masks" / f"{name}.png").write_bytes(mask)
            total += 1
    return total


def timed_preflight(data: DataConfig, cache: Path, threads: int | None) -> tuple[float, object]:
    start = time.perf_counter()
    report = preflight(data, "viewcoop" if data.masks_dir else "coop", cache, threads)
    return time.perf_counter() - start, report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of VeRi's counts")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--masks", action="store_true", help="a view mask per image")
    parser.add_argument("--threads", type=int, help="default: the pre-flight's own")
    parser.add_argument("--out", type=Path, help="keep the generated set here")
    args = parser.parse_args(argv)

    work = args.out or Path(tempfile.mkdtemp(prefix="bench-preflight-"))
    try:
        root, cache = work / "veri", work / "cache"
        start = time.perf_counter()
        total = write_veri_layout(root, args.scale, args.size, args.masks)
        print(
            f"wrote {total} images{' + masks' if args.masks else ''} in "
            f"{time.perf_counter() - start:.1f} s"
        )
        data = DataConfig(
            dataset="veri776", root=str(root), masks_dir=str(root / "masks") if args.masks else None
        )
        cold, report = timed_preflight(data, cache, args.threads)
        warm, _ = timed_preflight(data, cache, args.threads)
        changed = next((root / "image_train").iterdir())
        changed.write_bytes(changed.read_bytes())
        changed.touch()
        one, _ = timed_preflight(data, cache, args.threads)
        print(f"files checked: {report.checked}")
        for label, seconds in (("cold", cold), ("warm", warm), ("one-changed", one)):
            print(f"{label:12s} {seconds:6.2f} s  ({total / seconds:,.0f} images/s)")
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
