"""Procedural multi-view vehicle images in the VeRi-776 layout, with exact view masks.

Each identity is a handful of convex blocks (body, cabin, cab, cargo box, roof items)
whose faces carry a view label (front / back / top / side). An image is one pinhole
view of that vehicle, drawn with the painter's algorithm: back-face culling inside a
block, separating planes between blocks (``draw_order``), every polygon filled at pixel
centres. The same polygons are filled into a single-channel mask with their face's
label, so the mask is exact by construction; camera blur and resolution loss are
applied to the image only, afterwards. Decals (windows, lights, stripes, stickers,
wheels) are polygons in a face's own (u, v) coordinates and carry that face's label.

Identity = body type (sedan / suv / truck / bus / van, each with its own block
layout and per-identity proportions), body colour and marks (stripes, roof item,
sticker, wheel style). Some identities are near-duplicates on purpose: same type,
shape and nearly the same colour as another identity, differing by one mark.

Cameras differ in their mixture of viewpoints (camera 0 mostly front, 1 back, 2 side,
3 high top-oblique, 4 front-oblique, 5 back-oblique; further cameras repeat the six
view templates with their own look), lighting, colour cast, background, blur and
resolution. Every random draw for one image comes from a generator seeded with
``(seed, vid, camera, k)``, so the bytes written do not depend on generation order.

Output (``make_synthetic``)::

    out_dir/
    |-- image_train/  VVVV_cCCC_FFFFFFFF_0.jpg   (ids 1..T)
    |-- image_query/  copies of chosen gallery images, same names
    |-- image_test/   the gallery (ids T+1..N)
    |-- masks/        <stem>.png, uint8 0 background, 1 front, 2 back, 3 top, 4 side
    `-- meta.json     generation parameters, camera styles, per-id attributes, per-image poses
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from PIL import Image

from viewcoop_core.outputs import claim_output_dir, exclusive_folder, owns, write_marker
from viewcoop_core.synthetic.cameras import CameraStyle, camera_styles
from viewcoop_core.synthetic.common import TAG_FRAME, TAG_IMAGE, TAG_QUERY, rng_for
from viewcoop_core.synthetic.identities import VehicleAttributes, assign_identities
from viewcoop_core.synthetic.render import RenderedSample, render_sample
from viewcoop_core.synthetic.spec import SyntheticSpec
from viewcoop_core.synthetic.vehicles import VehicleModel, build_vehicle_model
from viewcoop_core.vocabulary import MASK_LABELS

logger = logging.getLogger(__name__)

SPLIT_DIRS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
MASK_DIR = "masks"
OUTPUT_KIND = "synthetic-set"
META_FILE = "meta.json"
JPEG_QUALITY = 92
IDS_PER_PROCESS = 8  # fewer identities than this per extra process: drawn in this one


@dataclass(frozen=True)
class SyntheticSummary:
    """What ``make_synthetic`` wrote."""

    out_dir: str
    num_train_ids: int
    num_test_ids: int
    num_train_images: int
    num_query_images: int
    num_gallery_images: int
    seconds: float


def veri_name(vid: int, cam: int, frame: int) -> str:
    """VeRi-776 file name for 1-based ``vid``, 0-based ``cam`` and a frame index."""
    return f"{vid:04d}_c{cam + 1:03d}_{frame:08d}_0.jpg"


def _frame_indices(seed: int, vid: int, cam: int, count: int) -> list[int]:
    """Increasing frame numbers of one vehicle's passage through one camera."""
    start = int(rng_for(seed, TAG_FRAME, vid, cam).integers(0, 10_000_000))
    return [start + 25 * k for k in range(count)]


def _write_sample(sample: RenderedSample, image_path: Path, mask_path: Path) -> None:
    Image.fromarray(sample.image).save(image_path, format="JPEG", quality=JPEG_QUALITY)
    Image.fromarray(sample.mask, mode="L").save(mask_path, format="PNG")


def _choose_queries(
    seed: int, vid: int, num_cameras: int, images_per_camera: int, count: int
) -> list[tuple[int, int]]:
    """``count`` (camera, k) pairs from distinct cameras."""
    rng = rng_for(seed, TAG_QUERY, vid)
    cams = sorted(int(c) for c in rng.choice(num_cameras, size=count, replace=False))
    return [(cam, int(rng.integers(images_per_camera))) for cam in cams]


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Claim ``out`` (a new or empty folder, or one the generator made: it carries the
    marker file) and empty the parts the generator writes. Never touches anything else."""
    claim_output_dir(out, OUTPUT_KIND, purpose="a synthetic set")
    folders = [out / d for d in SPLIT_DIRS.values()] + [out / MASK_DIR]
    used = [f for f in folders if f.is_dir() and any(f.iterdir())]
    if used and not overwrite:
        raise FileExistsError(
            f"{out} already holds a dataset ({', '.join(f.name for f in used)} not empty); "
            "choose an empty folder or pass overwrite=True"
        )
    (out / META_FILE).unlink(missing_ok=True)  # written last again: marks a finished set
    for folder in folders:
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _write_identity(
    out: Path,
    vehicle: VehicleModel,
    split: str,
    styles: list[CameraStyle],
    seed: int,
    images_per_camera: int,
    image_size: tuple[int, int],
) -> dict[tuple[int, int], dict]:
    """Render and write every image of one identity and its masks; (camera, k) -> meta record."""
    vid, records = vehicle.attrs.vid, {}
    for cam, style in enumerate(styles):
        for k, frame in enumerate(_frame_indices(seed, vid, cam, images_per_camera)):
            sample = render_sample(
                vehicle, style, image_size, rng_for(seed, TAG_IMAGE, vid, cam, k)
            )
            name = veri_name(vid, cam, frame)
            image_path = out / SPLIT_DIRS[split] / name
            _write_sample(sample, image_path, out / MASK_DIR / f"{image_path.stem}.png")
            pose = asdict(sample.pose)
            records[cam, k] = {"name": name, "split": split, "vid": vid, "cam": cam, **pose}
    return records


def _draw_identity(
    attrs: VehicleAttributes,
    out: Path,
    num_train_ids: int,
    styles: list[CameraStyle],
    seed: int,
    images_per_camera: int,
    image_size: tuple[int, int],
) -> dict[tuple[int, int], dict]:
    """Every image of one identity, written; (camera, k) -> its meta record."""
    split = "train" if attrs.vid <= num_train_ids else "gallery"
    vehicle = build_vehicle_model(attrs)
    return _write_identity(out, vehicle, split, styles, seed, images_per_camera, image_size)


def drawing_processes(num_ids: int) -> int:
    """Processes to draw ``num_ids`` identities with: one per available CPU, but at least
    ``IDS_PER_PROCESS`` identities each (starting a process costs about a second)."""
    return max(1, min(len(os.sched_getaffinity(0)), num_ids // IDS_PER_PROCESS))


def _draw_all(draw, identities: list[VehicleAttributes]) -> list[dict[tuple[int, int], dict]]:
    """``draw`` over the identities, in their order, in parallel where it pays.

    Every image is drawn from its own seeded generator, so the files do not depend on
    which process draws them. Worker processes are spawned, not forked: the caller may
    hold threads (torch, Ray) that a fork would copy in an undefined state.
    """
    processes = drawing_processes(len(identities))
    if processes == 1:
        return [draw(attrs) for attrs in identities]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        return list(pool.map(draw, identities, chunksize=2))


def _copy_queries(out: Path, records: dict[tuple[int, int], dict], chosen) -> list[dict]:
    """Copy the chosen gallery images into ``image_query`` (VeRi: same name, same bytes)."""
    queries = []
    for cam, k in chosen:
        record = records[cam, k]
        gallery_path = out / SPLIT_DIRS["gallery"] / record["name"]
        shutil.copyfile(gallery_path, out / SPLIT_DIRS["query"] / record["name"])
        queries.append({"name": record["name"], "split": "query", "vid": record["vid"], "cam": cam})
    return queries


def recorded_parameters(spec: SyntheticSpec) -> dict:
    """What ``meta.json`` records as the set's parameters (compared by ``ensure_synthetic``)."""
    return {**spec.to_dict(), "jpeg_quality": JPEG_QUALITY}


def ensure_synthetic(out_dir: str | Path, spec: SyntheticSpec) -> bool:
    """Draw ``make_synthetic(out_dir, spec)`` unless a finished set drawn with the same
    spec is already there; returns whether it drew.

    The generator marks its folder first (``viewcoop_core.outputs``) and writes
    ``meta.json`` last, so a marked folder without it is an interrupted drawing and one
    whose recorded parameters differ (an older config's set) is stale: both are drawn
    anew in place. A folder the generator did not make is never drawn into: it is
    refused, naming the folder (``ForeignOutputError``), e.g. a real dataset at
    ``data.root`` while ``data.dataset`` is still ``synthetic``.
    """
    out = Path(out_dir).expanduser()
    with exclusive_folder(out):  # a second run asking for the same set waits, then reads it
        wanted = recorded_parameters(spec)
        meta = out / META_FILE
        if meta.is_file():
            record = _read_meta(meta)
            _adopt_earlier_set(out, record)
            recorded = record.get("parameters", {})
            stale = {k: (recorded.get(k), v) for k, v in wanted.items() if recorded.get(k) != v}
            if not stale:
                return False
            logger.warning("redrawing the synthetic set in %s: (was, now) %s", out, stale)
        logger.info("drawing the synthetic set into %s", out)
        make_synthetic(out, spec, overwrite=True)
    return True


def _read_meta(meta: Path) -> dict:
    try:
        record = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _adopt_earlier_set(out: Path, record: dict) -> None:
    """Sets drawn before folders carried the marker are recognised by their meta.json
    (written by this generator, which names itself in it) and marked as ours."""
    generator = str(record.get("generator", ""))
    if generator.startswith("viewcoop_core.") and not owns(out, OUTPUT_KIND):
        write_marker(out, OUTPUT_KIND)


def make_synthetic(
    out_dir: str | Path, spec: SyntheticSpec, overwrite: bool = False
) -> SyntheticSummary:
    """Draw the synthetic multi-view set ``spec`` into ``out_dir`` (layout in the module
    docstring). The same spec gives byte-identical files. ``overwrite`` replaces an
    existing set in ``out_dir``.
    """
    start = time.perf_counter()
    spec.validate()
    num_ids, num_cameras, seed = spec.num_ids, spec.num_cameras, spec.seed
    images_per_camera, image_size = spec.images_per_camera, spec.image_shape
    num_train_ids = spec.num_train_ids
    out = Path(out_dir).expanduser()
    _prepare_out_dir(out, overwrite)
    identities = assign_identities(num_ids, num_train_ids, seed, spec.near_duplicate_fraction)
    styles = camera_styles(num_cameras, seed, spec.camera_looks)
    draw = partial(
        _draw_identity,
        out=out,
        num_train_ids=num_train_ids,
        styles=styles,
        seed=seed,
        images_per_camera=images_per_camera,
        image_size=image_size,
    )
    images: list[dict] = []
    for attrs, records in zip(identities, _draw_all(draw, identities)):
        images += records.values()
        if attrs.vid > num_train_ids:
            chosen = _choose_queries(
                seed, attrs.vid, num_cameras, images_per_camera, spec.queries_per_id
            )
            images += _copy_queries(out, records, chosen)
    counts = {split: sum(r["split"] == split for r in images) for split in SPLIT_DIRS}
    meta = {
        "generator": "viewcoop_core.synthetic",
        "parameters": recorded_parameters(spec),
        "view_labels": dict(MASK_LABELS),
        "train_ids": [1, num_train_ids],
        "test_ids": [num_train_ids + 1, num_ids],
        "counts": counts,
        "cameras": [asdict(s) for s in styles],
        "identities": [asdict(a) for a in identities],
        "images": images,
    }
    (out / META_FILE).write_text(json.dumps(_rounded(meta), indent=1, sort_keys=True))
    summary = SyntheticSummary(
        out_dir=str(out),
        num_train_ids=num_train_ids,
        num_test_ids=num_ids - num_train_ids,
        num_train_images=counts["train"],
        num_query_images=counts["query"],
        num_gallery_images=counts["gallery"],
        seconds=round(time.perf_counter() - start, 3),
    )
    logger.info(
        "synthetic set in %s: %d train ids / %d images, %d test ids / %d query + %d gallery "
        "images (%.1f s)",
        out,
        num_train_ids,
        counts["train"],
        summary.num_test_ids,
        counts["query"],
        counts["gallery"],
        summary.seconds,
    )
    return summary
