"""What the driver prepares before any worker starts: the synthetic set and weights."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.config import load_config
from orchestrator.sweep.run import prepare_shared_inputs
from orchestrator.train import ensure_dataset

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
    (root / "image_train").mkdir(parents=True)
    (root / "image_train" / "0001_c001_00000000_0.jpg").write_bytes(b"half a file")
    ensure_dataset(load_config(None, {**TINY_SET, "data.root": str(root)}))
    assert recorded_parameters(root)["num_ids"] == 4
    assert len(list((root / "image_train").iterdir())) == 2 * 2 * 2  # 2 ids x 2 cams x 2


def test_shared_inputs_are_prepared_once_on_the_driver(tmp_path, monkeypatch):
    calls = []

    def fake_pretraining(cache_dir, spec, max_seconds):
        calls.append((Path(cache_dir), spec.image_size))
        return Path(cache_dir) / "clip.pt"

    monkeypatch.setattr("orchestrator.train.ensure_pretrained_tiny_clip", fake_pretraining)
    base = {**TINY_SET, "data.root": str(tmp_path / "syn"), "model.synthetic_pretrain": True}
    configs = {
        "a": load_config(None, {**base, "graph.tau": "0"}),
        "b": load_config(None, {**base, "graph.tau": "2", "model.synthetic_pretrain": False}),
    }
    prepared = prepare_shared_inputs(configs)
    assert (tmp_path / "syn" / "image_train").is_dir()
    assert calls == [(tmp_path / "pretrained", 32)]
    a, b = prepared["a"], prepared["b"]
    assert (a.model.pretrained, a.model.synthetic_pretrain) == (
        str(tmp_path / "pretrained" / "clip.pt"),
        False,
    )
    assert (a.graph.tau, b.graph.tau) == ([0], [2])
    assert b.model.pretrained is None
