"""The dataset pre-flight: each fault injected into a small VeRi-layout set, and what the
check does with it (training images skipped and counted; evaluation images and masks an
error naming every file), its cache, and the header reader against PIL."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from veri_files import HEIGHT, SPLITS, WIDTH, good_mask, jpeg_bytes, png_bytes, write_set

from viewcoop_core.config import DataConfig
from viewcoop_core.data.image_dataset import ImageDataset, ImageReadError
from viewcoop_core.data.image_headers import header_size
from viewcoop_core.data.masks import MissingMasksError
from viewcoop_core.data.preflight import DataCheckError, check_image, preflight


def data(root: Path, masks: bool = True, **fields) -> DataConfig:
    return DataConfig(
        dataset="veri776",
        root=str(root),
        masks_dir=str(root / "masks") if masks else None,
        **fields,
    )


def truncate(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) * 2 // 3])


FAULTS = {
    "truncated JPEG": truncate,
    "zero-byte file": lambda path: path.write_bytes(b""),
    "non-image .jpg": lambda path: path.write_text("<html>404 not found</html>"),
}
FAULT_WORDS = {
    "truncated JPEG": "truncated",
    "zero-byte file": "0 bytes",
    "non-image .jpg": "not an image",
}


def test_a_clean_set_passes_with_every_image(tmp_path):
    write_set(tmp_path)
    report = preflight(data(tmp_path, max_skipped_fraction=0.2), "viewcoop")
    assert len(report.dataset.train) == 12 and not report.skipped
    assert report.metrics()["data_skipped_train_images"] == 0.0
    assert report.checked == sum(SPLITS.values()) * 2  # every image and every mask


@pytest.mark.parametrize("fault", FAULTS)
def test_an_unreadable_training_image_is_skipped_and_counted(tmp_path, fault):
    files = write_set(tmp_path)
    bad = files["image_train"][5]
    FAULTS[fault](bad)
    report = preflight(data(tmp_path, max_skipped_fraction=0.2), "viewcoop")
    assert list(report.skipped) == [str(bad)]
    assert FAULT_WORDS[fault] in report.skipped[str(bad)]
    assert str(bad) not in {s.path for s in report.dataset.train}
    assert len(report.dataset.train) == 11
    assert report.metrics()["data_skipped_train_images"] == 1.0
    # Identities stay contiguous after the removal.
    assert sorted({s.pid for s in report.dataset.train}) == [0, 1, 2]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("split", ["image_query", "image_test"])
def test_an_unreadable_evaluation_image_stops_naming_every_file(tmp_path, fault, split):
    files = write_set(tmp_path)
    first, second = files[split][0], files[split][1]
    FAULTS[fault](first)
    FAULTS[fault](second)
    with pytest.raises(DataCheckError) as info:
        preflight(data(tmp_path), "viewcoop")
    message = str(info.value)
    assert str(first) in message and str(second) in message
    assert FAULT_WORDS[fault] in message
    assert "test protocol" in message


def test_too_many_unreadable_training_images_stop_the_run(tmp_path):
    files = write_set(tmp_path)
    bad = files["image_train"][:3]
    for path in bad:
        path.write_bytes(b"")
    with pytest.raises(DataCheckError, match="max_skipped_fraction") as info:
        preflight(data(tmp_path, max_skipped_fraction=0.2), "viewcoop")  # 3 of 12 > 20%
    assert all(str(path) in str(info.value) for path in bad)
    with pytest.raises(DataCheckError):
        preflight(data(tmp_path, max_skipped_fraction=0.0), "coop", check_train=True)


def test_a_mask_of_another_size_is_an_error_not_a_resize(tmp_path):
    files = write_set(tmp_path)
    mask = tmp_path / "masks" / f"{files['image_train'][2].stem}.png"
    mask.write_bytes(png_bytes(good_mask((500, 37))))
    with pytest.raises(DataCheckError) as info:
        preflight(data(tmp_path), "viewcoop")
    message = str(info.value)
    assert str(mask) in message
    assert f"500x37 but its image {files['image_train'][2].name} is {WIDTH}x{HEIGHT}" in message


def test_a_mask_with_value_7_is_an_error(tmp_path):
    files = write_set(tmp_path)
    values = good_mask()
    values[3, 4] = 7
    mask = tmp_path / "masks" / f"{files['image_query'][1].stem}.png"
    mask.write_bytes(png_bytes(values))
    with pytest.raises(DataCheckError) as info:
        preflight(data(tmp_path), "viewcoop")
    assert str(mask) in str(info.value) and "[7] outside 0..4" in str(info.value)


def test_an_rgb_or_undecodable_mask_is_an_error(tmp_path):
    files = write_set(tmp_path)
    rgb = tmp_path / "masks" / f"{files['image_train'][0].stem}.png"
    rgb.write_bytes(png_bytes(np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8), mode="RGB"))
    broken = tmp_path / "masks" / f"{files['image_train'][1].stem}.png"
    truncate(broken)
    with pytest.raises(DataCheckError) as info:
        preflight(data(tmp_path), "viewcoop")
    assert str(rgb) in str(info.value) and "single-channel" in str(info.value)
    assert str(broken) in str(info.value)


def test_view_aware_prompts_need_masks_before_anything_starts(tmp_path):
    write_set(tmp_path, masks=False)
    with pytest.raises(MissingMasksError, match="12 of 12 have none"):
        preflight(data(tmp_path, masks=False), "viewcoop")
    assert len(preflight(data(tmp_path, masks=False), "coop").dataset.train) == 12


def test_padding_after_the_end_marker_is_no_damage(tmp_path):
    """A file failing the cheap end-marker check is decoded in full before it is judged."""
    files = write_set(tmp_path)
    padded = files["image_query"][0]
    padded.write_bytes(padded.read_bytes() + b"trailing bytes some writers append")
    assert check_image(str(padded)).problem is None
    preflight(data(tmp_path), "viewcoop")


def test_verdicts_are_cached_by_size_and_mtime_outside_the_data_folder(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "runs" / ".cache"
    files = write_set(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    first = preflight(data(root, max_skipped_fraction=0.2), "viewcoop", cache_dir=cache)
    second = preflight(data(root, max_skipped_fraction=0.2), "viewcoop", cache_dir=cache)
    assert (first.checked, first.cached) == (36, 0)
    assert (second.checked, second.cached) == (0, 36)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert list(cache.glob("preflight-*.json"))
    truncate(files["image_train"][7])  # changes size and mtime
    third = preflight(data(root, max_skipped_fraction=0.2), "viewcoop", cache_dir=cache)
    assert (third.checked, third.cached) == (1, 35)
    assert list(third.skipped) == [str(files["image_train"][7])]


def test_a_long_error_list_goes_to_a_file(tmp_path):
    files = write_set(tmp_path / "data")
    for i in range(60):
        (tmp_path / "data" / "image_test" / f"0009_c001_{i:08d}_9.jpg").write_bytes(b"")
    with pytest.raises(DataCheckError) as info:
        preflight(data(tmp_path / "data"), "coop", cache_dir=tmp_path / "cache")
    listing = tmp_path / "cache" / "preflight-errors.txt"
    assert f"all 60 listed in {listing}" in str(info.value)
    assert len(listing.read_text().splitlines()) == 60
    assert str(files["image_test"][0]) not in listing.read_text()


@pytest.mark.parametrize(
    "make",
    [
        lambda: jpeg_bytes(0),
        lambda: jpeg_bytes(1, size=(33, 7), progressive=True),
        lambda: jpeg_bytes(2, size=(300, 200), exif=b"Exif\x00\x00" + bytes(2000)),
        lambda: png_bytes(good_mask((13, 9))),
        lambda: png_bytes(np.zeros((5, 11, 3), dtype=np.uint8), mode="RGB"),
    ],
    ids=["baseline", "progressive", "exif", "png-L", "png-RGB"],
)
def test_header_size_agrees_with_pil(make):
    content = make()
    with Image.open(io.BytesIO(content)) as image:
        assert header_size(content) == image.size


def test_header_size_refuses_what_it_cannot_vouch_for():
    content = jpeg_bytes(0)
    assert header_size(content[:20]) is None  # header cut short: PIL decides
    assert header_size(b"GIF89a" + bytes(20)) is None
    assert header_size(b"\xff\xd8\xff\xda\x00\x08" + bytes(8)) is None  # a scan before a frame


def test_image_dataset_names_a_file_that_fails_to_decode(tmp_path):
    files = write_set(tmp_path, masks=False)
    bad = files["image_train"][0]
    truncate(bad)
    from viewcoop_core.data.datasets import load_dataset

    dataset = ImageDataset(load_dataset(data(tmp_path, masks=False)).train)
    with pytest.raises(ImageReadError, match=str(bad)):
        dataset[0]
    assert dataset[1]["image"].shape == (3, HEIGHT, WIDTH)
