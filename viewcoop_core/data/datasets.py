"""Loaders for VeRi-776, VehicleID and the synthetic dataset, and a name registry.

Every loader returns a ``ReidDataset`` of ``ReidSample`` records with absolute
paths: Ray workers may run from another working directory, so relative paths
would not resolve there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from viewcoop_core.config import DataConfig
from viewcoop_core.data.masks import attach_masks, existing_mask_names
from viewcoop_core.data.types import ReidDataset, ReidSample

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
VERI_NAME_PATTERN = re.compile(r"(?P<pid>\d+)_c(?P<cam>\d+)_\d+_\d+")
VERI_NAME_FORMAT = "<vehicle id>_c<camera>_<frame>_<n>.jpg, e.g. 0001_c001_00016450_0.jpg"
VERI776_NUM_CAMS = 20
VEHICLEID_TEST_SIZES = (800, 1600, 2400)
VEHICLEID_LINE_PATTERN = re.compile(r"(?P<name>\S+)\s+(?P<vid>\d+)")
_VERI_SPLITS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
_MAX_LISTED = 5

VERI776_LAYOUT = """\
<root>/
|-- image_train/   0001_c001_00016450_0.jpg ...  (<vehicle id>_c<camera 001-020>_<frame>_<n>)
|-- image_query/
`-- image_test/    (the gallery)"""

SYNTHETIC_LAYOUT = """\
<root>/
|-- image_train/   0001_c001_00000000_0.jpg ...  (<vehicle id>_c<camera>_<frame>_<n>)
|-- image_query/
|-- image_test/    (the gallery)
`-- masks/         <image stem>.png, one per image (0 background, 1 front, 2 back, 3 top, 4 side)"""

VEHICLEID_LAYOUT = """\
<root>/
|-- image/                <name>.jpg
`-- train_test_split/
    |-- train_list.txt     one "<name> <vehicle id>" per line, name without .jpg
    |-- test_list_800.txt
    |-- test_list_1600.txt
    `-- test_list_2400.txt"""


class DatasetLayoutError(FileNotFoundError):
    """A dataset root, folder or file is missing; the message draws the expected layout."""


class DatasetFormatError(ValueError):
    """A file name or list line does not follow the dataset's naming convention."""


def _layout_error(dataset: str, missing: Path, layout: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{dataset}: {missing} does not exist. Expected layout:\n{layout}")


def _require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise _layout_error(dataset, path, layout)
    return path


def _require_file(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_file():
        raise _layout_error(dataset, path, layout)
    return path


def _resolve_root(root: str | os.PathLike[str], dataset: str, layout: str) -> Path:
    return _require_dir(Path(root).expanduser().resolve(), dataset, layout)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; other files (.txt, .xml) skipped."""
    return [folder / name for name in image_names(folder)]


def image_names(folder: Path) -> list[str]:
    """The names of ``list_images``, as strings (pathlib costs ~50 us a file; VeRi has 51k)."""
    with os.scandir(folder) as entries:
        return sorted(
            entry.name
            for entry in entries
            if "." + entry.name.rpartition(".")[2].lower() in IMAGE_SUFFIXES and entry.is_file()
        )


def parse_veri_name(name: str | os.PathLike[str], max_cam: int | None = None) -> tuple[int, int]:
    """(vehicle id, 0-based camera index) of a VeRi-style file name or path.

    ``0001_c001_00016450_0.jpg`` -> ``(1, 0)``. Cameras are numbered from 1 in the
    names; ``max_cam`` (20 for VeRi-776) bounds them when the camera count is known.
    """
    match = VERI_NAME_PATTERN.fullmatch(os.path.splitext(os.path.basename(name))[0])
    if match is None:
        raise DatasetFormatError(f"{name}: file name does not match {VERI_NAME_FORMAT}")
    pid, cam = int(match["pid"]), int(match["cam"])
    if cam < 1 or (max_cam is not None and cam > max_cam):
        bound = f"1..{max_cam}" if max_cam is not None else ">= 1"
        raise DatasetFormatError(f"{name}: camera c{match['cam']} is outside {bound}")
    return pid, cam - 1


def relabel_pids(samples: Sequence[ReidSample]) -> list[ReidSample]:
    """Copies of ``samples`` with ids mapped to 0..P-1 in increasing order of the original id."""
    new_pid = {pid: label for label, pid in enumerate(sorted({s.pid for s in samples}))}
    return [dataclasses.replace(s, pid=new_pid[s.pid]) for s in samples]


def _read_veri_split(
    folder: Path, dataset: str, layout: str, max_cam: int | None
) -> list[ReidSample]:
    names = image_names(_require_dir(folder, dataset, layout))
    if not names:
        raise DatasetLayoutError(f"{dataset}: {folder} holds no images. Expected layout:\n{layout}")
    prefix = os.path.join(folder, "")
    samples = []
    for name in names:
        match = VERI_NAME_PATTERN.fullmatch(name.rpartition(".")[0])
        cam = int(match["cam"]) if match else 0
        if cam < 1 or (max_cam is not None and cam > max_cam):
            parse_veri_name(prefix + name, max_cam=max_cam)  # raises, naming the file
        samples.append(ReidSample(path=prefix + name, pid=int(match["pid"]), camid=cam - 1))
    return samples


def _load_veri_layout(root: Path, dataset: str, layout: str, max_cam: int | None) -> ReidDataset:
    splits = {
        split: _read_veri_split(root / folder, dataset, layout, max_cam)
        for split, folder in _VERI_SPLITS.items()
    }
    return ReidDataset(
        name=dataset,
        root=str(root),
        train=relabel_pids(splits["train"]),
        query=splits["query"],
        gallery=splits["gallery"],
        protocol="veri",
    )


def _with_masks(dataset: ReidDataset, masks_dir: Path, eval_masks_required: bool) -> ReidDataset:
    # Training builds the view prompt from every image's mask; evaluation ranks image
    # features only, so eval masks are attached when present and not demanded.
    present = existing_mask_names(masks_dir)  # one listing for the four splits
    return dataclasses.replace(
        dataset,
        train=attach_masks(dataset.train, masks_dir, True, present),
        query=attach_masks(dataset.query, masks_dir, eval_masks_required, present),
        gallery=attach_masks(dataset.gallery, masks_dir, eval_masks_required, present),
        test=attach_masks(dataset.test, masks_dir, eval_masks_required, present),
    )


def _log_summary(dataset: ReidDataset) -> None:
    logger.info(
        "%s at %s: train %d images / %d ids / %d cams, query %d, gallery %d, test %d",
        dataset.name,
        dataset.root,
        len(dataset.train),
        dataset.num_train_pids,
        dataset.num_train_cams,
        len(dataset.query),
        len(dataset.gallery),
        len(dataset.test),
    )


def load_veri776(
    root: str | os.PathLike[str], masks_dir: str | os.PathLike[str] | None = None
) -> ReidDataset:
    """VeRi-776 (``protocol="veri"``): train ids relabelled, query/gallery keep theirs.

    With ``masks_dir``, every training image must have ``masks_dir/<stem>.png``;
    query and gallery masks are attached where present.
    """
    root_path = _resolve_root(root, "veri776", VERI776_LAYOUT)
    dataset = _load_veri_layout(root_path, "veri776", VERI776_LAYOUT, VERI776_NUM_CAMS)
    if masks_dir is not None:
        dataset = _with_masks(dataset, Path(masks_dir).expanduser().resolve(), False)
    _log_summary(dataset)
    return dataset


def load_synthetic(
    root: str | os.PathLike[str], masks_dir: str | os.PathLike[str] | None = None
) -> ReidDataset:
    """The generated dataset: VeRi layout plus ``root/masks``, a mask for every image.

    The camera count is whatever the generator used, so cameras are not bounded.
    ``masks_dir`` replaces ``root/masks`` (e.g. masks predicted by a view parser).
    """
    root_path = _resolve_root(root, "synthetic", SYNTHETIC_LAYOUT)
    if masks_dir is None:
        masks_dir = _require_dir(root_path / "masks", "synthetic", SYNTHETIC_LAYOUT)
    else:
        masks_dir = Path(masks_dir).expanduser().resolve()
    dataset = _load_veri_layout(root_path, "synthetic", SYNTHETIC_LAYOUT, max_cam=None)
    dataset = _with_masks(dataset, masks_dir, eval_masks_required=True)
    _log_summary(dataset)
    return dataset


def _read_vehicleid_list(list_path: Path) -> list[tuple[str, int]]:
    entries = []
    with list_path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            match = VEHICLEID_LINE_PATTERN.fullmatch(text)
            if match is None:
                raise DatasetFormatError(
                    f"{list_path}:{line_number}: expected '<image name> <vehicle id>' "
                    f"(name without .jpg, integer id, e.g. '0004251 1'), got {text!r}"
                )
            entries.append((match["name"], int(match["vid"])))
    return entries


def _vehicleid_samples(
    entries: list[tuple[str, int]], image_dir: Path, present: set[str], list_path: Path
) -> list[ReidSample]:
    missing = [f"{name}.jpg" for name, _ in entries if f"{name}.jpg" not in present]
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED])
        raise DatasetLayoutError(
            f"vehicleid: {len(missing)} of {len(entries)} images named in {list_path} are not "
            f"in {image_dir} (e.g. {listed}). Expected layout:\n{VEHICLEID_LAYOUT}"
        )
    # VehicleID has no camera labels: every image gets camid 0 here. The VehicleID
    # split (viewcoop_core.metrics) assigns query cam 0 / gallery cam 1, so the VeRi
    # same-id-and-camera gallery filter never removes a true match.
    return [
        ReidSample(path=str(image_dir / f"{name}.jpg"), pid=vid, camid=0) for name, vid in entries
    ]


def load_vehicleid(
    root: str | os.PathLike[str],
    test_size: int = 2400,
    masks_dir: str | os.PathLike[str] | None = None,
) -> ReidDataset:
    """VehicleID (``protocol="vehicleid"``): relabelled train, one whole test list in ``test``.

    ``test_size`` picks ``test_list_{800,1600,2400}.txt``; test samples keep their
    original vehicle ids. Query/gallery are drawn from ``test`` by the evaluation.
    """
    if test_size not in VEHICLEID_TEST_SIZES:
        allowed = ", ".join(str(size) for size in VEHICLEID_TEST_SIZES)
        raise ValueError(f"vehicleid: test_size={test_size!r}; allowed values are {allowed}")
    root_path = _resolve_root(root, "vehicleid", VEHICLEID_LAYOUT)
    image_dir = _require_dir(root_path / "image", "vehicleid", VEHICLEID_LAYOUT)
    split_dir = _require_dir(root_path / "train_test_split", "vehicleid", VEHICLEID_LAYOUT)
    train_list = _require_file(split_dir / "train_list.txt", "vehicleid", VEHICLEID_LAYOUT)
    test_list = _require_file(
        split_dir / f"test_list_{test_size}.txt", "vehicleid", VEHICLEID_LAYOUT
    )
    # One listing to check existence: ~220k images make per-file stats slow on network disks.
    present = {path.name for path in list_images(image_dir)}
    train = _vehicleid_samples(_read_vehicleid_list(train_list), image_dir, present, train_list)
    test = _vehicleid_samples(_read_vehicleid_list(test_list), image_dir, present, test_list)
    dataset = ReidDataset(
        name="vehicleid",
        root=str(root_path),
        train=relabel_pids(train),
        test=test,
        protocol="vehicleid",
    )
    if masks_dir is not None:
        dataset = _with_masks(dataset, Path(masks_dir).expanduser().resolve(), False)
    _log_summary(dataset)
    return dataset


DATASETS: dict[str, Callable[..., ReidDataset]] = {
    "veri776": load_veri776,
    "vehicleid": load_vehicleid,
    "synthetic": load_synthetic,
}


def build_dataset(name: str, root: str | os.PathLike[str], **kwargs: object) -> ReidDataset:
    """Load the dataset registered as ``name`` from ``root``; ``kwargs`` go to its loader."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root, **kwargs)


def load_dataset(data: DataConfig) -> ReidDataset:
    """The configured dataset, with its view masks attached where a folder is given and
    the training images of ``data.skip_list`` left out (ids relabelled after).

    ``data.view_parser`` needs its masks made first (``orchestrator.prepare.with_view_masks``
    pins them as ``data.masks_dir``): without them a synthetic set would silently train on
    its exact masks, so that is refused.
    """
    if data.view_parser and not data.masks_dir:
        raise ValueError(
            f"data.view_parser={data.view_parser!r} but no masks were predicted with it "
            "(data.masks_dir is empty): prepare the config with "
            "orchestrator.prepare.with_view_masks(cfg) before loading the dataset"
        )
    kwargs = {}
    if data.dataset == "vehicleid":
        kwargs["test_size"] = data.vehicleid_test_size
    if data.masks_dir:
        kwargs["masks_dir"] = data.masks_dir
    dataset = build_dataset(data.dataset, data.root, **kwargs)
    if data.skip_list:
        dataset = without_skipped(dataset, read_skip_list(data.skip_list))
    return dataset


def read_skip_list(path: str | os.PathLike[str]) -> set[str]:
    """The image paths (or bare file names) of a skip list, one per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data.skip_list={str(path)!r} does not exist: it names a text file listing "
            "training images to leave out, one path per line"
        )
    # A line may carry the reason after a tab (the pre-flight writes "path<TAB>why").
    return {line.split("\t")[0].strip() for line in path.read_text().splitlines() if line.strip()}


def without_skipped(dataset: ReidDataset, skipped: set[str]) -> ReidDataset:
    """``dataset`` without the training images named in ``skipped`` (path or file name).

    Only training images are ever skipped: the query and gallery make the test protocol.
    """
    train = [s for s in dataset.train if s.path not in skipped and Path(s.path).name not in skipped]
    logger.info(
        "leaving out %d training image(s) of the skip list (%d entries)",
        len(dataset.train) - len(train),
        len(skipped),
    )
    return dataclasses.replace(dataset, train=relabel_pids(train))
