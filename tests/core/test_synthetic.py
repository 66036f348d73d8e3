"""The synthetic multi-view vehicle generator: layout, determinism, exact masks, views."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viewcoop_core.synthetic import SyntheticSpec, make_synthetic
from viewcoop_core.synthetic.cameras import camera_style, camera_styles
from viewcoop_core.synthetic.common import BODY_TYPES
from viewcoop_core.synthetic.identities import sample_attributes
from viewcoop_core.synthetic.render import render_sample
from viewcoop_core.synthetic.vehicles import build_vehicle_model

SMALL = {
    "num_ids": 8,
    "num_cameras": 4,
    "images_per_camera": 2,
    "image_size": 64,
    "queries_per_id": 2,
}
NAME = re.compile(r"^(\d{4})_c(\d{3})_(\d{8})_0\.jpg$")
SPLITS = ("image_train", "image_query", "image_test")
FRONT, BACK, TOP, SIDE = 1, 2, 3, 4


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("synthetic") / "set"
    return out, make_synthetic(out, SyntheticSpec(seed=0, **SMALL))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _parse(name: str) -> tuple[int, int]:
    match = NAME.match(name)
    assert match, f"{name} is not a VeRi-776 name"
    return int(match.group(1)), int(match.group(2)) - 1


def _names(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in (root / split).iterdir())


def test_same_seed_same_bytes_other_seed_differs(small_set, tmp_path):
    root, _ = small_set
    make_synthetic(tmp_path / "again", SyntheticSpec(seed=0, **SMALL))
    first, again = _files(root), _files(tmp_path / "again")
    assert sorted(first) == sorted(again)
    assert all(first[name] == again[name] for name in first)

    other_root = tmp_path / "other"
    make_synthetic(other_root, SyntheticSpec(seed=1, **SMALL))
    other = _files(other_root)
    first_jpegs = {v for k, v in first.items() if k.endswith(".jpg")}
    other_jpegs = {v for k, v in other.items() if k.endswith(".jpg")}
    assert not first_jpegs & other_jpegs


def test_images_do_not_depend_on_generation_order(small_set, tmp_path):
    # With one image per camera the loop visits images in a different order and count;
    # per-image seeding means every file it writes equals the one in the bigger set.
    root, _ = small_set
    fewer = tmp_path / "fewer"
    make_synthetic(fewer, SyntheticSpec(seed=0, **{**SMALL, "images_per_camera": 1}))
    bigger = _files(root)
    for rel, content in _files(fewer).items():
        if rel.startswith(("image_train", "image_test", "masks")):
            assert bigger.get(rel) == content, rel


def test_layout_names_splits_and_queries(small_set):
    root, summary = small_set
    train = [_parse(n) for n in _names(root, "image_train")]
    gallery = [_parse(n) for n in _names(root, "image_test")]
    query_names = _names(root, "image_query")
    train_ids, test_ids = {v for v, _ in train}, {v for v, _ in gallery}
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(range(1, SMALL["num_ids"] + 1))
    assert (summary.num_train_ids, summary.num_test_ids) == (len(train_ids), len(test_ids))
    assert summary.num_train_images == len(train) == len(train_ids) * 4 * 2
    assert summary.num_gallery_images == len(gallery) == len(test_ids) * 4 * 2
    # every id seen images_per_camera times by every camera
    for vid in train_ids | test_ids:
        for cam in range(SMALL["num_cameras"]):
            assert (train + gallery).count((vid, cam)) == SMALL["images_per_camera"]

    assert set(query_names) <= set(_names(root, "image_test"))
    assert summary.num_query_images == len(query_names) == len(test_ids) * SMALL["queries_per_id"]
    for name in query_names:
        assert (root / "image_query" / name).read_bytes() == (
            root / "image_test" / name
        ).read_bytes()
    cams_per_query_id: dict[int, list[int]] = {}
    for vid, cam in map(_parse, query_names):
        cams_per_query_id.setdefault(vid, []).append(cam)
    assert set(cams_per_query_id) == test_ids
    for cams in cams_per_query_id.values():
        assert len(set(cams)) == len(cams) == SMALL["queries_per_id"]


def test_every_image_has_a_same_size_mask_with_view_labels(small_set):
    root, _ = small_set
    for split in SPLITS:
        for name in _names(root, split):
            image = Image.open(root / split / name)
            mask = Image.open(root / "masks" / f"{Path(name).stem}.png")
            assert image.mode == "RGB" and mask.mode == "L"
            assert image.size == mask.size == (64, 64)
            values = np.unique(np.asarray(mask))
            assert set(values.tolist()) <= {0, 1, 2, 3, 4}
            assert 0 in values and len(values) >= 2  # background and some vehicle


def _flat_style(cam: int, colour=(255, 0, 255)):
    """Camera ``cam``'s viewpoints, but a flat background and no image degradation."""
    return replace(
        camera_style(cam, seed=0),
        background="flat",
        ground_colour=colour,
        blur_sigma=0.0,
        resolution_scale=1.0,
        noise_std=0.0,
        brightness=1.0,
        brightness_jitter=0.0,
        colour_cast=(1.0, 1.0, 1.0),
    )


def _vehicle(body_type: str, vid: int, **marks):
    return build_vehicle_model(
        replace(sample_attributes(vid, seed=0), body_type=body_type, **marks)
    )


@pytest.mark.parametrize("body_type", BODY_TYPES)
def test_mask_is_exactly_the_drawn_vehicle_on_a_flat_background(body_type):
    background = np.array([255, 0, 255], dtype=np.uint8)  # a colour no shaded paint produces
    vehicle = _vehicle(body_type, vid=3, roof_item="rack", roof_colour="silver", stripe="double")
    for cam in range(6):
        for k in range(2):
            sample = render_sample(
                vehicle, _flat_style(cam), (64, 80), np.random.default_rng([cam, k])
            )
            assert sample.image.shape == (64, 80, 3) and sample.mask.shape == (64, 80)
            changed = np.any(sample.image != background, axis=-1)
            np.testing.assert_array_equal(changed, sample.mask > 0)
            assert 0.1 < changed.mean() < 0.9


def _ray_cast_labels(vehicle, camera, height: int, width: int) -> np.ndarray:
    """Naive reference: label of the first face each pixel-centre ray enters, 0 for a miss.

    Every part is a convex polyhedron, the intersection of its faces' half-spaces plus
    its bottom plane; the entering face is the plane with the largest entry parameter.
    """
    cols, rows = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    local = np.stack(
        [(cols - camera.cx) / camera.focal, (rows - camera.cy) / camera.focal, np.ones_like(cols)],
        -1,
    )
    rays = (local @ camera.rotation).reshape(-1, 3)
    best_t = np.full(len(rays), np.inf)
    labels = np.zeros(len(rays), dtype=np.uint8)
    for part in vehicle.parts:
        faces = list(part.faces.values())
        normals = [f.normal for f in faces] + [np.array([0.0, 0.0, -1.0])]
        offsets = [f.normal @ f.corners[0] for f in faces] + [-part.lo[2]]
        face_labels = [f.label for f in faces] + [0]
        t_in, t_out = np.zeros(len(rays)), np.full(len(rays), np.inf)
        entry_label = np.zeros(len(rays), dtype=np.uint8)
        for normal, offset, label in zip(normals, offsets, face_labels):
            denom = rays @ normal
            num = offset - camera.centre @ normal
            with np.errstate(divide="ignore", invalid="ignore"):
                t = num / denom
            entering = denom < 0
            later = entering & (t > t_in)
            t_in = np.where(later, t, t_in)
            entry_label = np.where(later, label, entry_label)
            t_out = np.where((denom > 0) & (t < t_out), t, t_out)
            t_out = np.where((denom == 0) & (num < 0), -np.inf, t_out)
        hit = (t_in < t_out) & (t_in > 0) & (t_in < best_t)
        best_t = np.where(hit, t_in, best_t)
        labels = np.where(hit, entry_label, labels)
    return labels.reshape(height, width)


@pytest.mark.parametrize("body_type", BODY_TYPES)
def test_mask_labels_agree_with_ray_casting(body_type):
    vehicle = _vehicle(body_type, vid=5, roof_item="roof_box", roof_colour="white")
    for cam in range(6):
        sample = render_sample(vehicle, _flat_style(cam), (128, 128), np.random.default_rng(cam))
        reference = _ray_cast_labels(vehicle, sample.camera, 128, 128)
        hit = reference > 0
        assert hit.sum() > 500
        # both sample pixel centres, so they agree up to ties exactly on an edge
        assert np.mean(sample.mask[hit] == reference[hit]) > 0.999
        # where no block is hit the mask shows background, or a wheel: wheels are side
        # decals that hang below the body
        assert np.isin(sample.mask[~hit], (0, SIDE)).all()
        assert (sample.mask[~hit] == SIDE).mean() < 0.05


def _view_fractions(masks: list[np.ndarray]) -> np.ndarray:
    """Mean over images of each view's share of the vehicle pixels: float (4,) front, back, top, side."""
    shares = []
    for mask in masks:
        counts = np.array(
            [(mask == label).sum() for label in (FRONT, BACK, TOP, SIDE)], dtype=float
        )
        shares.append(counts / counts.sum())
    return np.mean(shares, axis=0)


def test_written_masks_follow_each_cameras_view_design(small_set):
    root, _ = small_set
    masks: dict[int, list[np.ndarray]] = {}
    for path in sorted((root / "masks").iterdir()):
        _, cam = _parse(path.stem + ".jpg")
        masks.setdefault(cam, []).append(np.asarray(Image.open(path)))
    designed = {0: FRONT, 1: BACK, 2: SIDE, 3: TOP}
    order = (FRONT, BACK, TOP, SIDE)
    for cam, view in designed.items():
        shares = _view_fractions(masks[cam])
        assert order[int(np.argmax(shares))] == view, (cam, shares)
    assert _view_fractions(masks[0])[1] < 0.02  # a front camera never sees the back
    assert _view_fractions(masks[1])[0] < 0.02


def test_oblique_cameras_mix_side_with_front_or_back():
    masks: dict[int, list[np.ndarray]] = {4: [], 5: []}
    for vid in range(1, 9):
        vehicle = build_vehicle_model(sample_attributes(vid, seed=0))
        for cam, rendered in masks.items():
            rng = np.random.default_rng([vid, cam])
            rendered.append(render_sample(vehicle, camera_style(cam, 0), (64, 64), rng).mask)
    front, back, _, side = _view_fractions(masks[4])
    assert side > 0.25 and front > 0.1 and back < 0.02
    front, back, _, side = _view_fractions(masks[5])
    assert side > 0.25 and back > 0.1 and front < 0.02


def test_meta_records_identities_with_near_duplicates(small_set):
    root, summary = small_set
    meta = json.loads((root / "meta.json").read_text())
    assert meta["parameters"]["num_ids"] == SMALL["num_ids"]
    identities = {ident["vid"]: ident for ident in meta["identities"]}
    assert sorted(identities) == list(range(1, SMALL["num_ids"] + 1))
    assert {ident["body_type"] for ident in identities.values()} <= set(BODY_TYPES)

    def marks(ident):
        return (ident["stripe"], ident["roof_item"], ident["sticker"], ident["hub_colour"])

    # brute force over all pairs, not trusting the near_duplicate_of field
    near = []
    for a in identities.values():
        for b in identities.values():
            if a["vid"] < b["vid"] and a["body_type"] == b["body_type"]:
                distance = np.linalg.norm(np.subtract(a["colour"], b["colour"]))
                differing = sum(x != y for x, y in zip(marks(a), marks(b)))
                if distance < 20 and differing == 1 and a["scale"] == b["scale"]:
                    near.append((a["vid"], b["vid"]))
    last_train = summary.num_train_ids
    assert any(b <= last_train for _, b in near), near
    assert any(a > last_train for a, _ in near), near
    recorded = {
        (i["near_duplicate_of"], i["vid"]) for i in identities.values() if i["near_duplicate_of"]
    }
    assert recorded <= set(near)

    poses = [m for m in meta["images"] if m["split"] != "query"]
    assert len(poses) == summary.num_train_images + summary.num_gallery_images
    assert all(0 <= m["azimuth_deg"] < 360 and 0 < m["elevation_deg"] < 90 for m in poses)


LOOK_FIELDS = ("light_dir", "ambient", "brightness", "colour_cast", "background", "blur_sigma")


def test_camera_looks_share_the_look_and_keep_each_view():
    own = [camera_style(cam, 3) for cam in range(6)]
    assert camera_styles(6, 3) == own
    for looks in (1, 2):
        shared = camera_styles(6, 3, looks)
        for cam, style in enumerate(shared):
            assert style.cam == cam
            assert (style.template, style.view_modes) == (own[cam].template, own[cam].view_modes)
            for name in LOOK_FIELDS:
                assert getattr(style, name) == getattr(own[cam % looks], name), (cam, name)
    # one look: cameras still differ in view only, so their background is the same
    assert len({s.background for s in camera_styles(6, 3, 1)}) == 1
    assert len({(s.ambient, s.blur_sigma) for s in own}) == 6


def test_camera_looks_recorded_and_validated(tmp_path):
    make_synthetic(tmp_path / "a", SyntheticSpec(seed=0, camera_looks=1, **SMALL))
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["parameters"]["camera_looks"] == 1
    assert len({json.dumps(c["colour_cast"]) for c in meta["cameras"]}) == 1
    assert [c["template"] for c in meta["cameras"]] == ["front", "back", "side", "top"]
    with pytest.raises(ValueError, match="camera_looks"):
        make_synthetic(tmp_path / "b", SyntheticSpec(camera_looks=5, **SMALL))


def test_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="queries_per_id"):
        make_synthetic(tmp_path / "a", SyntheticSpec(**{**SMALL, "queries_per_id": 5}))
    with pytest.raises(ValueError, match="test_fraction"):
        make_synthetic(tmp_path / "b", SyntheticSpec(**SMALL, test_fraction=1.0))
    make_synthetic(
        tmp_path / "c",
        SyntheticSpec(**{**SMALL, "num_ids": 2, "num_cameras": 2, "queries_per_id": 1}),
    )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic(tmp_path / "c", SyntheticSpec(**SMALL))
    summary = make_synthetic(tmp_path / "c", SyntheticSpec(**SMALL), overwrite=True)
    assert len(_names(tmp_path / "c", "image_train")) == summary.num_train_images


def test_drawing_in_several_processes_writes_the_same_files(small_set, tmp_path, monkeypatch):
    from viewcoop_core.synthetic import writer

    root, _ = small_set
    monkeypatch.setattr(writer, "drawing_processes", lambda num_ids: 2)
    make_synthetic(tmp_path / "parallel", SyntheticSpec(seed=0, **SMALL))
    assert _files(tmp_path / "parallel") == _files(root)


def _ensure_when_both_are_ready(barrier, out: Path, spec: SyntheticSpec, drew) -> None:
    from viewcoop_core.synthetic.writer import ensure_synthetic

    barrier.wait()
    drew.put(ensure_synthetic(out, spec))


def test_two_runs_asking_for_one_set_at_once_draw_it_once(small_set, tmp_path):
    """Two local runs started together (two `train_local.py` or `viewcoop train`) used to
    draw the same set over each other, and one then read a half-drawn folder."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, drew = context.Barrier(2), context.Queue()
    out = tmp_path / "shared"
    runs = [
        context.Process(
            target=_ensure_when_both_are_ready,
            args=(barrier, out, SyntheticSpec(seed=0, **SMALL), drew),
        )
        for _ in range(2)
    ]
    for run in runs:
        run.start()
    results = sorted(drew.get(timeout=120) for _ in runs)
    for run in runs:
        run.join(timeout=60)
    assert [run.exitcode for run in runs] == [0, 0]
    assert results == [False, True]  # the second waited, then found the finished set
    assert _files(out) == _files(small_set[0])
