"""Dataset loaders, masks and the image dataset, on tiny fake layouts built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from viewcoop_core.data.datasets import (
    DATASETS,
    DatasetFormatError,
    DatasetLayoutError,
    build_dataset,
    load_synthetic,
    load_vehicleid,
    load_veri776,
    parse_veri_name,
    relabel_pids,
)
from viewcoop_core.data.image_dataset import ImageDataset
from viewcoop_core.data.masks import (
    MissingMasksError,
    attach_masks,
    load_mask,
    mask_path_for,
)
from viewcoop_core.data.types import ReidSample

# (vehicle id, camera as written in the name 1-based, frame) per split; ids deliberately
# unsorted and sparse so that relabelling order is visible.
VERI_TRAIN = [(42, 3, 10), (7, 1, 11), (42, 20, 12), (300, 5, 13), (7, 2, 14), (15, 9, 15)]
VERI_QUERY = [(501, 4, 20), (999, 2, 21)]
VERI_GALLERY = [(501, 6, 30), (999, 2, 31), (777, 11, 32)]


def _write_image(path: Path, color: tuple[int, int, int] = (10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def _write_mask(path: Path, value: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8), mode="L").save(path)


def _veri_name(pid: int, cam: int, frame: int) -> str:
    return f"{pid:04d}_c{cam:03d}_{frame:08d}_0.jpg"


def _make_veri_layout(root: Path, with_masks: bool = False) -> None:
    for folder, entries in (
        ("image_train", VERI_TRAIN),
        ("image_query", VERI_QUERY),
        ("image_test", VERI_GALLERY),
    ):
        for pid, cam, frame in entries:
            name = _veri_name(pid, cam, frame)
            _write_image(root / folder / name)
            if with_masks:
                _write_mask(root / "masks" / name.replace(".jpg", ".png"))
    # VeRi ships list/label files beside the images; they must be skipped.
    (root / "image_train" / "name_train.txt").write_text("ignored\n")
    (root / "image_test" / "test_label.xml").write_text("<ignored/>\n")


def _by_name(samples: list[ReidSample]) -> dict[str, tuple[int, int]]:
    return {Path(s.path).name: (s.pid, s.camid) for s in samples}


def _naive_relabel(ids: list[int]) -> dict[int, int]:
    """Rank of each distinct id among the distinct ids, by counting smaller ones."""
    distinct = set(ids)
    return {pid: sum(other < pid for other in distinct) for pid in distinct}


# --- VeRi-776 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["0001_c001_00016450_0.jpg", "0776_c020_00000001_1.jpg", "0123_c007_00099999_0"]
)
def test_parse_veri_name_matches_split_reference(name: str) -> None:
    pid_text, cam_text = name.split("_")[:2]
    assert parse_veri_name(name) == (int(pid_text), int(cam_text[1:]) - 1)


def test_parse_veri_name_accepts_a_full_path(tmp_path: Path) -> None:
    assert parse_veri_name(tmp_path / "image_query" / "0002_c005_00001_0.jpg") == (2, 4)


@pytest.mark.parametrize(
    ("name", "max_cam", "fragment"),
    [
        ("0001-c001-00016450-0.jpg", None, "does not match"),
        ("car_c001_00016450_0.jpg", None, "does not match"),
        ("0001_c001.jpg", None, "does not match"),
        ("0001_c000_00016450_0.jpg", None, "outside >= 1"),
        ("0001_c021_00016450_0.jpg", 20, "outside 1..20"),
    ],
)
def test_parse_veri_name_rejects_bad_names(name: str, max_cam: int | None, fragment: str) -> None:
    with pytest.raises(DatasetFormatError, match=fragment) as info:
        parse_veri_name(name, max_cam=max_cam)
    assert name in str(info.value)


def test_relabel_pids_follows_sorted_original_ids() -> None:
    rng = np.random.default_rng(3)
    ids = rng.choice([3, 11, 40, 41, 900, 1000], size=30).tolist()
    samples = [ReidSample(path=f"{i}.jpg", pid=pid, camid=i % 3) for i, pid in enumerate(ids)]
    relabelled = relabel_pids(samples)
    relabel = _naive_relabel(ids)
    assert [s.pid for s in relabelled] == [relabel[pid] for pid in ids]
    assert [(s.path, s.camid) for s in relabelled] == [(s.path, s.camid) for s in samples]


def test_load_veri776_ids_cameras_and_relabelling(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path)
    dataset = load_veri776(tmp_path)

    relabel = _naive_relabel([pid for pid, _, _ in VERI_TRAIN])
    assert relabel == {7: 0, 15: 1, 42: 2, 300: 3}
    expected_train = {_veri_name(p, c, f): (relabel[p], c - 1) for p, c, f in VERI_TRAIN}
    expected_query = {_veri_name(p, c, f): (p, c - 1) for p, c, f in VERI_QUERY}
    expected_gallery = {_veri_name(p, c, f): (p, c - 1) for p, c, f in VERI_GALLERY}

    assert dataset.protocol == "veri" and dataset.name == "veri776"
    assert _by_name(dataset.train) == expected_train
    assert _by_name(dataset.query) == expected_query
    assert _by_name(dataset.gallery) == expected_gallery
    assert dataset.test == []
    assert len(dataset.train) == len(VERI_TRAIN)  # the .txt / .xml files were skipped
    assert dataset.num_train_pids == 4
    assert dataset.num_train_cams == len({c for _, c, _ in VERI_TRAIN})
    assert all(Path(s.path).is_absolute() and Path(s.path).is_file() for s in dataset.train)
    assert all(s.mask_path is None for s in dataset.train + dataset.query + dataset.gallery)


def test_load_veri776_is_sorted_by_file_name(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path)
    names = [Path(s.path).name for s in load_veri776(tmp_path).train]
    assert names == sorted(names)


def test_load_veri776_names_the_offending_file(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path)
    _write_image(tmp_path / "image_query" / "IMG_0001.jpg")
    with pytest.raises(DatasetFormatError) as info:
        load_veri776(tmp_path)
    message = str(info.value)
    assert "IMG_0001.jpg" in message and "0001_c001_00016450_0.jpg" in message


def test_veri776_bounds_cameras_but_synthetic_does_not(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path, with_masks=True)
    name = _veri_name(8, 25, 40)
    _write_image(tmp_path / "image_train" / name)
    _write_mask(tmp_path / "masks" / name.replace(".jpg", ".png"))
    with pytest.raises(DatasetFormatError, match="c025"):
        load_veri776(tmp_path)
    assert _by_name(load_synthetic(tmp_path).train)[name][1] == 24


def test_missing_root_error_draws_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as info:
        load_veri776(tmp_path / "nowhere")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "nowhere" in message
    for folder in ("image_train/", "image_query/", "image_test/"):
        assert folder in message


def test_missing_split_folder_is_named(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path)
    for path in (tmp_path / "image_test").iterdir():
        path.unlink()
    (tmp_path / "image_test").rmdir()
    with pytest.raises(DatasetLayoutError, match=r"image_test does not exist") as info:
        load_veri776(tmp_path)
    assert "image_query/" in str(info.value)


def test_empty_split_folder_is_a_layout_error(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path)
    for path in (tmp_path / "image_query").glob("*.jpg"):
        path.unlink()
    with pytest.raises(DatasetLayoutError, match="holds no images"):
        load_veri776(tmp_path)


def test_veri776_masks_required_for_train_only(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path)
    masks_dir = tmp_path / "parsed"
    for pid, cam, frame in VERI_TRAIN:
        _write_mask(masks_dir / _veri_name(pid, cam, frame).replace(".jpg", ".png"))
    dataset = load_veri776(tmp_path, masks_dir=masks_dir)
    for sample in dataset.train:
        assert sample.mask_path == str(masks_dir.resolve() / (Path(sample.path).stem + ".png"))
    assert all(s.mask_path is None for s in dataset.query + dataset.gallery)

    (masks_dir / _veri_name(*VERI_TRAIN[0]).replace(".jpg", ".png")).unlink()
    with pytest.raises(MissingMasksError, match=f"1 of {len(VERI_TRAIN)} images"):
        load_veri776(tmp_path, masks_dir=masks_dir)


# --- synthetic ------------------------------------------------------------------------


def test_load_synthetic_attaches_every_mask(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path, with_masks=True)
    dataset = load_synthetic(tmp_path)
    assert dataset.name == "synthetic" and dataset.protocol == "veri"
    masks_dir = tmp_path.resolve() / "masks"
    for sample in dataset.train + dataset.query + dataset.gallery:
        assert sample.mask_path == str(masks_dir / (Path(sample.path).stem + ".png"))
        assert Path(sample.mask_path).is_file()
    relabel = _naive_relabel([pid for pid, _, _ in VERI_TRAIN])
    assert _by_name(dataset.train) == {
        _veri_name(p, c, f): (relabel[p], c - 1) for p, c, f in VERI_TRAIN
    }


def test_load_synthetic_reports_missing_masks_with_counts(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path, with_masks=True)
    gone = [_veri_name(*VERI_GALLERY[0]), _veri_name(*VERI_GALLERY[2])]
    for name in gone:
        (tmp_path / "masks" / name.replace(".jpg", ".png")).unlink()
    with pytest.raises(MissingMasksError) as info:
        load_synthetic(tmp_path)
    message = str(info.value)
    assert f"2 of {len(VERI_GALLERY)} images" in message
    for name in gone:
        assert name.replace(".jpg", ".png") in message
    assert "view-parsing model" in message and "4 side" in message


def test_load_synthetic_requires_masks_folder(tmp_path: Path) -> None:
    _make_veri_layout(tmp_path, with_masks=False)
    with pytest.raises(DatasetLayoutError, match="masks does not exist") as info:
        load_synthetic(tmp_path)
    assert "masks/" in str(info.value) and "image_train/" in str(info.value)


# --- VehicleID ------------------------------------------------------------------------

VID_TRAIN = [("0000101", 88), ("0000102", 88), ("0000103", 5), ("0000104", 1203), ("0000105", 5)]
VID_TESTS = {
    800: [("0000201", 17), ("0000202", 17), ("0000203", 4)],
    1600: [("0000201", 17), ("0000202", 17), ("0000203", 4), ("0000301", 900)],
    2400: [("0000201", 17), ("0000203", 4), ("0000301", 900), ("0000401", 2), ("0000402", 2)],
}


def _write_list(path: Path, entries: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name} {vid}\n" for name, vid in entries))


def _make_vehicleid_layout(root: Path) -> None:
    names = {name for name, _ in VID_TRAIN}
    names |= {name for entries in VID_TESTS.values() for name, _ in entries}
    for name in names:
        _write_image(root / "image" / f"{name}.jpg")
    _write_list(root / "train_test_split" / "train_list.txt", VID_TRAIN)
    for size, entries in VID_TESTS.items():
        _write_list(root / "train_test_split" / f"test_list_{size}.txt", entries)


@pytest.mark.parametrize("test_size", [800, 1600, 2400])
def test_load_vehicleid_lists(tmp_path: Path, test_size: int) -> None:
    _make_vehicleid_layout(tmp_path)
    dataset = load_vehicleid(tmp_path, test_size=test_size)
    relabel = _naive_relabel([vid for _, vid in VID_TRAIN])
    assert relabel == {5: 0, 88: 1, 1203: 2}

    assert dataset.protocol == "vehicleid" and dataset.name == "vehicleid"
    assert [(Path(s.path).name, s.pid, s.camid) for s in dataset.train] == [
        (f"{name}.jpg", relabel[vid], 0) for name, vid in VID_TRAIN
    ]
    assert [(Path(s.path).name, s.pid, s.camid) for s in dataset.test] == [
        (f"{name}.jpg", vid, 0) for name, vid in VID_TESTS[test_size]
    ]
    assert dataset.query == [] and dataset.gallery == []
    assert all(Path(s.path).is_file() for s in dataset.train + dataset.test)


@pytest.mark.parametrize("test_size", [0, 1200, "800"])
def test_load_vehicleid_rejects_unknown_test_size(tmp_path: Path, test_size: object) -> None:
    _make_vehicleid_layout(tmp_path)
    with pytest.raises(ValueError, match="800, 1600, 2400"):
        load_vehicleid(tmp_path, test_size=test_size)


@pytest.mark.parametrize("bad_line", ["0000103", "0000103 5 extra", "0000103 five"])
def test_load_vehicleid_malformed_line(tmp_path: Path, bad_line: str) -> None:
    _make_vehicleid_layout(tmp_path)
    list_path = tmp_path / "train_test_split" / "train_list.txt"
    lines = list_path.read_text().splitlines()
    lines[2] = bad_line
    list_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError) as info:
        load_vehicleid(tmp_path)
    message = str(info.value)
    assert "train_list.txt:3" in message
    assert "<image name> <vehicle id>" in message and repr(bad_line) in message


def test_load_vehicleid_skips_blank_lines(tmp_path: Path) -> None:
    _make_vehicleid_layout(tmp_path)
    list_path = tmp_path / "train_test_split" / "train_list.txt"
    list_path.write_text("\n" + list_path.read_text() + "\n\n")
    assert len(load_vehicleid(tmp_path).train) == len(VID_TRAIN)


def test_load_vehicleid_missing_image(tmp_path: Path) -> None:
    _make_vehicleid_layout(tmp_path)
    (tmp_path / "image" / "0000402.jpg").unlink()
    assert len(load_vehicleid(tmp_path, test_size=800).test) == 3  # that list does not use it
    with pytest.raises(DatasetLayoutError, match=r"1 of 5 images .* \(e\.g\. 0000402\.jpg\)"):
        load_vehicleid(tmp_path, test_size=2400)


@pytest.mark.parametrize("missing", ["image", "train_test_split/test_list_1600.txt"])
def test_load_vehicleid_layout_errors(tmp_path: Path, missing: str) -> None:
    _make_vehicleid_layout(tmp_path)
    target = tmp_path / missing
    if target.is_dir():
        for path in target.iterdir():
            path.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(DatasetLayoutError) as info:
        load_vehicleid(tmp_path, test_size=1600)
    message = str(info.value)
    assert f"{target} does not exist" in message
    assert "train_test_split/" in message and "test_list_2400.txt" in message


def test_load_vehicleid_with_masks(tmp_path: Path) -> None:
    _make_vehicleid_layout(tmp_path)
    masks_dir = tmp_path / "masks"
    for name, _ in VID_TRAIN:
        _write_mask(masks_dir / f"{name}.png")
    dataset = load_vehicleid(tmp_path, masks_dir=masks_dir)
    assert [Path(s.mask_path).name for s in dataset.train] == [f"{n}.png" for n, _ in VID_TRAIN]
    assert all(s.mask_path is None for s in dataset.test)


# --- masks ----------------------------------------------------------------------------


def test_mask_path_for_uses_the_image_stem(tmp_path: Path) -> None:
    path = mask_path_for(tmp_path / "m", "/data/veri/image_train/0001_c001_00016450_0.jpg")
    assert path == tmp_path / "m" / "0001_c001_00016450_0.png"


def test_attach_masks_copies_and_reports_missing(tmp_path: Path) -> None:
    samples = [ReidSample(path=f"/imgs/{i:03d}.jpg", pid=i, camid=0) for i in range(8)]
    present = {0, 2, 3, 7}
    for i in present:
        _write_mask(tmp_path / f"{i:03d}.png")

    optional = attach_masks(samples, tmp_path, required=False)
    assert [s.mask_path is not None for s in optional] == [i in present for i in range(8)]
    assert all(s.mask_path is None for s in samples)  # inputs untouched
    assert [(s.path, s.pid, s.camid) for s in optional] == [
        (s.path, s.pid, s.camid) for s in samples
    ]

    with pytest.raises(MissingMasksError) as info:
        attach_masks(samples, tmp_path)
    message = str(info.value)
    assert "4 of 8 images" in message
    assert all(f"{i:03d}.png" in message for i in range(8) if i not in present)
    assert "synthetic generator" in message and "<image stem>.png" in message


def test_attach_masks_lists_only_the_first_few(tmp_path: Path) -> None:
    samples = [ReidSample(path=f"/imgs/{i:03d}.jpg", pid=0, camid=0) for i in range(12)]
    with pytest.raises(MissingMasksError, match=r"12 of 12 images .*and 7 more") as info:
        attach_masks(samples, tmp_path / "absent")
    assert "does not exist" in str(info.value)
    assert "011.png" not in str(info.value)


def test_load_mask_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, size=(6, 9), dtype=np.uint8)
    Image.fromarray(values, mode="L").save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png")
    assert mask.dtype == np.uint8 and mask.shape == (6, 9)
    np.testing.assert_array_equal(mask, values)


def test_load_mask_reads_palette_indices(tmp_path: Path) -> None:
    values = np.array([[0, 1, 2], [3, 4, 4]], dtype=np.uint8)
    image = Image.fromarray(values, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0])
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "p.png"), values)


def test_load_mask_rejects_values_above_four(tmp_path: Path) -> None:
    values = np.zeros((4, 4), dtype=np.uint8)
    values[1, 2] = 5
    values[3, 3] = 255
    Image.fromarray(values, mode="L").save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"\[5, 255\] outside 0\.\.4"):
        load_mask(tmp_path / "bad.png")


def test_load_mask_rejects_rgb(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (1, 1, 1)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="single-channel"):
        load_mask(tmp_path / "rgb.png")


# --- ImageDataset ---------------------------------------------------------------------


def test_image_dataset_items(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8) for _ in range(3)]
    samples = []
    for i, array in enumerate(pixels):
        path = tmp_path / f"{i}.png"  # lossless, so pixel values can be compared exactly
        Image.fromarray(array, mode="RGB").save(path)
        samples.append(ReidSample(path=str(path), pid=10 + i, camid=i % 2))
    gray = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    samples.append(ReidSample(path=str(tmp_path / "gray.png"), pid=3, camid=4))

    dataset = ImageDataset(samples)
    assert len(dataset) == 4
    references = pixels + [np.repeat(gray[:, :, None], 3, axis=2)]
    for i, reference in enumerate(references):
        item = dataset[i]
        assert item["index"] == i
        assert (item["pid"], item["camid"]) == (samples[i].pid, samples[i].camid)
        image = item["image"]
        assert image.dtype == torch.float32 and image.shape == (3, 5, 7)
        expected = torch.from_numpy(reference.transpose(2, 0, 1).astype(np.float32) / 255.0)
        torch.testing.assert_close(image, expected)


def test_image_dataset_applies_transform_and_collates(tmp_path: Path) -> None:
    samples = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 6), (i * 40, 0, 0)).save(path)
        samples.append(ReidSample(path=str(path), pid=i, camid=7))
    seen_modes = []

    def transform(image: Image.Image) -> torch.Tensor:
        seen_modes.append(image.mode)
        return torch.full((3, 2, 2), float(image.getpixel((0, 0))[0]))

    loader = torch.utils.data.DataLoader(ImageDataset(samples, transform), batch_size=4)
    batch = next(iter(loader))
    assert seen_modes == ["RGB"] * 4
    assert batch["image"].shape == (4, 3, 2, 2)
    torch.testing.assert_close(batch["image"][:, 0, 0, 0], torch.tensor([0.0, 40.0, 80.0, 120.0]))
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["pid"].tolist() == [0, 1, 2, 3]
    assert batch["camid"].tolist() == [7, 7, 7, 7]


# --- registry -------------------------------------------------------------------------


def test_registry_names() -> None:
    assert set(DATASETS) == {"veri776", "vehicleid", "synthetic"}
    assert DATASETS["veri776"] is load_veri776
    assert DATASETS["vehicleid"] is load_vehicleid
    assert DATASETS["synthetic"] is load_synthetic


def test_build_dataset_dispatches_with_kwargs(tmp_path: Path) -> None:
    veri_root, vid_root = tmp_path / "veri", tmp_path / "vid"
    _make_veri_layout(veri_root, with_masks=True)
    _make_vehicleid_layout(vid_root)

    assert build_dataset("veri776", veri_root) == load_veri776(veri_root)
    assert build_dataset("synthetic", veri_root) == load_synthetic(veri_root)
    built = build_dataset("vehicleid", vid_root, test_size=800)
    assert built == load_vehicleid(vid_root, test_size=800)
    assert len(built.test) == len(VID_TESTS[800])


def test_build_dataset_unknown_name_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        build_dataset("veri", tmp_path)
    message = str(info.value)
    assert "'veri'" in message
    assert all(name in message for name in ("veri776", "vehicleid", "synthetic"))


def test_a_view_parser_without_its_predicted_masks_is_refused(tmp_path):
    """Loading a config that names a parser before its masks were made would train a
    synthetic set on its exact masks without a word (train_local did): refused."""
    from viewcoop_core.config import DataConfig
    from viewcoop_core.data.datasets import load_dataset

    data = DataConfig(dataset="synthetic", root=str(tmp_path), view_parser="parser.pt")
    with pytest.raises(ValueError, match="data.view_parser='parser.pt'.*with_view_masks"):
        load_dataset(data)
