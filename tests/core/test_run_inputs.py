"""What the driver prepares before any worker starts: the synthetic set and weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.sweep.run import prepare_shared_inputs
from orchestrator.train import ensure_dataset
from viewcoop_core.outputs import ForeignOutputError, claim_output_dir, marker_path
from viewcoop_core.synthetic import SyntheticSpec, make_synthetic

TINY_SET = {
    "data.dataset": "synthetic",
    "data.synthetic.num_ids": 4,
    "data.synthetic.num_cameras": 2,
    "data.synthetic.image_size": 32,
    "model.image_size": 32,
}


def recorded_parameters(root: Path) -> dict:
    return json.loads((root / "meta.json").read_text())["parameters"]


def test_synthetic_set_is_drawn_once_and_redrawn_when_its_parameters_change(tmp_path):
    root = tmp_path / "syn"
    cfg = load_config(None, {**TINY_SET, "data.root": str(root)})
    ensure_dataset(cfg)
    first = recorded_parameters(root)
    assert (first["num_ids"], first["camera_looks"]) == (4, None)
    stamp = (root / "meta.json").stat().st_mtime_ns
    ensure_dataset(cfg)  # same parameters: kept as it is
    assert (root / "meta.json").stat().st_mtime_ns == stamp
    ensure_dataset(
        load_config(None, {**TINY_SET, "data.root": str(root), "data.synthetic.camera_looks": 1})
    )
    assert recorded_parameters(root)["camera_looks"] == 1
    assert len(json.loads((root / "meta.json").read_text())["cameras"]) == 2


def test_an_interrupted_drawing_is_drawn_anew(tmp_path):
    root = tmp_path / "syn"
    claim_output_dir(root, "synthetic-set")  # the generator marks its folder first
    (root / "image_train").mkdir(parents=True)
    (root / "image_train" / "0001_c001_00000000_0.jpg").write_bytes(b"half a file")
    ensure_dataset(load_config(None, {**TINY_SET, "data.root": str(root)}))
    assert recorded_parameters(root)["num_ids"] == 4
    assert len(list((root / "image_train").iterdir())) == 2 * 2 * 2  # 2 ids x 2 cams x 2


def write_veri_like_folder(root: Path) -> dict[Path, bytes]:
    files = {
        root / "image_train" / "0001_c001_00016450_0.jpg": b"user image 1",
        root / "image_query" / "0002_c002_00016450_0.jpg": b"user image 2",
        root / "image_test" / "0002_c003_00016450_0.jpg": b"user image 3",
        root / "masks" / "0001_c001_00016450_0.png": b"user mask",
        root / "notes.txt": b"the user's notes",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_a_real_dataset_at_the_synthetic_root_is_refused_and_left_intact(tmp_path):
    root = tmp_path / "VeRi"
    files = write_veri_like_folder(root)
    cfg = load_config(None, {**TINY_SET, "data.root": str(root)})
    with pytest.raises(ForeignOutputError, match=str(root)):
        ensure_dataset(cfg)
    assert {p: p.read_bytes() for p in files} == files
    assert sorted(p.name for p in root.iterdir()) == [
        "image_query",
        "image_test",
        "image_train",
        "masks",
        "notes.txt",
    ]


def test_make_synthetic_refuses_a_folder_it_did_not_make_even_with_overwrite(tmp_path):
    files = write_veri_like_folder(tmp_path / "data")
    with pytest.raises(ForeignOutputError, match="did not create"):
        make_synthetic(tmp_path / "data", SyntheticSpec(num_ids=4, num_cameras=2), overwrite=True)
    assert {p: p.read_bytes() for p in files} == files


def test_a_set_drawn_before_markers_existed_is_recognised_by_its_meta(tmp_path):
    root = tmp_path / "syn"
    cfg = load_config(None, {**TINY_SET, "data.root": str(root)})
    ensure_dataset(cfg)
    marker_path(root, "synthetic-set").unlink()  # as an earlier version left it
    ensure_dataset(
        load_config(None, {**TINY_SET, "data.root": str(root), "data.synthetic.seed": 3})
    )
    assert recorded_parameters(root)["seed"] == 3


def test_shared_inputs_are_prepared_once_on_the_driver(tmp_path, monkeypatch):
    checked = []
    monkeypatch.setattr(
        "viewcoop_core.models.shipped.shipped_weights",
        lambda tag, model_name: checked.append((tag, model_name)),
    )
    base = {**TINY_SET, "data.root": str(tmp_path / "syn"), "model.name": "viewcoop-tiny"}
    configs = {
        "a": load_config(None, {**base, "graph.tau": "0", "model.pretrained": "synthetic"}),
        "b": load_config(None, {**base, "graph.tau": "2"}),
    }
    prepared = prepare_shared_inputs(configs)
    assert (tmp_path / "syn" / "image_train").is_dir()
    assert checked == [("synthetic", "viewcoop-tiny")]
    a, b = prepared["a"], prepared["b"]
    assert (a.model.pretrained, b.model.pretrained) == ("synthetic", None)
    assert (a.graph.tau, b.graph.tau) == ([0], [2])
