"""A run that names a view parser: masks predicted once, cached by checkpoint and image set."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
import torch

from orchestrator.config import load_config
from orchestrator.train import ensure_dataset
from viewcoop_core.data.masks import MaskFormatError
from viewcoop_core.engine.components import load_dataset
from viewcoop_core.viewparse.cache import prepare_view_masks
from viewcoop_core.viewparse.predict import write_mask_atomically
from viewcoop_core.viewparse.spec import ParserSpec, TrainSettings
from viewcoop_core.viewparse.train import train_parser

TINY_SPEC = ParserSpec(input_size=32, base_channels=4, depth=2)
TINY_SET = {
    "data.dataset": "synthetic",
    "data.synthetic.num_ids": 4,
    "data.synthetic.num_cameras": 2,
    "data.synthetic.image_size": 32,
    "model.image_size": 32,
}
NUM_IMAGES = 16  # 8 train + 8 gallery; the 4 queries are copies of gallery images


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(dataset root, two parsers that differ only by their training seed)."""
    base = tmp_path_factory.mktemp("cache")
    root = base / "syn"
    ensure_dataset(load_config(None, {**TINY_SET, "data.root": str(root)}))
    parsers = []
    for seed in (0, 1):
        path = base / f"parser{seed}.pt"
        settings = TrainSettings(steps=2, batch_size=4, seed=seed)
        train_parser([root / "image_train"], root / "masks", path, TINY_SPEC, settings)
        parsers.append(path)
    return root, parsers


def config(root: Path, parser: Path | None, **extra):
    overrides = {**TINY_SET, "data.root": str(root), "data.view_parser": parser, **extra}
    return load_config(
        None, {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()}
    )


def snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}


def test_without_a_parser_the_config_is_left_alone(world):
    root, _ = world
    cfg = config(root, None)
    assert prepare_view_masks(cfg) is cfg


def test_masks_are_predicted_once_and_the_run_reads_them(world, tmp_path):
    root, (parser, _) = world
    cfg = prepare_view_masks(config(root, parser, **{"data.view_masks_cache": tmp_path}))
    folder = Path(cfg.data.masks_dir)
    assert folder.parent == tmp_path and folder.name.startswith("synthetic-parser")
    assert len(snapshot(folder)) == NUM_IMAGES
    dataset = load_dataset(cfg.data)
    for sample in dataset.train + dataset.query + dataset.gallery:
        assert Path(sample.mask_path).parent == folder
    before = snapshot(folder)
    again = prepare_view_masks(config(root, parser, **{"data.view_masks_cache": tmp_path}))
    assert again.data.masks_dir == cfg.data.masks_dir and snapshot(folder) == before
    # A sweep's trial gets the driver's prepared config: the finished cache is its own
    # masks folder, recognised as such (not copied into a new cache as "given" masks).
    assert prepare_view_masks(cfg) is cfg and sorted(tmp_path.iterdir()) == [
        tmp_path / ".viewcoop-view-mask-cache",
        folder,
    ]


def test_the_default_cache_lives_next_to_the_data(world):
    root, (parser, _) = world
    cfg = prepare_view_masks(config(root, parser))
    assert Path(cfg.data.masks_dir).parent == root.resolve().parent / "view-masks"


def test_another_checkpoint_or_a_changed_image_gets_another_folder(world, tmp_path):
    root, (parser, other_parser) = world
    cache = {"data.view_masks_cache": tmp_path}
    first = prepare_view_masks(config(root, parser, **cache)).data.masks_dir
    assert prepare_view_masks(config(root, other_parser, **cache)).data.masks_dir != first
    image = next((root / "image_train").iterdir())
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert prepare_view_masks(config(root, parser, **cache)).data.masks_dir != first
    finally:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_flip_setting_gets_its_own_folder(world, tmp_path):
    root, (parser, _) = world
    cache = {"data.view_masks_cache": tmp_path}
    flipped = prepare_view_masks(config(root, parser, **cache))
    plain = prepare_view_masks(config(root, parser, **cache, **{"data.view_parser_flip": False}))
    assert Path(flipped.data.masks_dir).name.endswith("-flip")
    assert Path(plain.data.masks_dir).name == Path(flipped.data.masks_dir).name[:-4] + "noflip"
    # A prepared config is not taken for the other setting's finished cache.
    other = dataclasses.replace(flipped.data, view_parser_flip=False)
    redone = prepare_view_masks(dataclasses.replace(flipped, data=other))
    assert redone.data.masks_dir != flipped.data.masks_dir


def test_given_masks_are_kept_and_only_the_missing_ones_predicted(world, tmp_path):
    root, (parser, _) = world
    given = tmp_path / "given"
    given.mkdir()
    train_stems = [p.stem for p in (root / "image_train").iterdir()]
    for stem in train_stems:
        shutil.copyfile(root / "masks" / f"{stem}.png", given / f"{stem}.png")
    cfg = prepare_view_masks(
        config(root, parser, **{"data.masks_dir": given, "data.view_masks_cache": tmp_path / "c"})
    )
    folder = Path(cfg.data.masks_dir)
    assert len(snapshot(folder)) == NUM_IMAGES
    for stem in train_stems:
        assert (folder / f"{stem}.png").read_bytes() == (given / f"{stem}.png").read_bytes()


def test_a_given_mask_of_the_wrong_size_is_named(world, tmp_path):
    root, (parser, _) = world
    given = tmp_path / "given"
    given.mkdir()
    stem = next((root / "image_train").iterdir()).stem
    write_mask_atomically(given, f"{stem}.png", torch.zeros(8, 8, dtype=torch.uint8).numpy())
    with pytest.raises(MaskFormatError, match=f"{stem}.png is 8x8"):
        prepare_view_masks(
            config(
                root, parser, **{"data.masks_dir": given, "data.view_masks_cache": tmp_path / "c"}
            )
        )
    assert not (tmp_path / "c").exists()


def test_a_missing_checkpoint_is_named_before_anything_is_written(world, tmp_path):
    root, _ = world
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        prepare_view_masks(
            config(root, tmp_path / "nowhere.pt", **{"data.view_masks_cache": tmp_path / "c"})
        )
    assert not (tmp_path / "c").exists()
