"""The view parser: mask files, checkpoints, scores, train / predict / evaluate, resuming."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.cli import main
from viewcoop_core.data.masks import MaskFormatError, load_mask
from viewcoop_core.outputs import ForeignOutputError
from viewcoop_core.synthetic import SyntheticSpec, make_synthetic
from viewcoop_core.viewparse import predict as predict_module
from viewcoop_core.viewparse.checkpoint import (
    ParserCheckpointError,
    file_digest,
    load_parser,
    read_parser_checkpoint,
    save_parser,
)
from viewcoop_core.viewparse.evaluate import evaluate_parser, score_masks
from viewcoop_core.viewparse.files import paired_files
from viewcoop_core.viewparse.inference import predict_batch
from viewcoop_core.viewparse.model import build_parser
from viewcoop_core.viewparse.predict import SOURCE_FILE, predict_folder, write_mask_atomically
from viewcoop_core.viewparse.spec import ParserSpec, TrainSettings
from viewcoop_core.viewparse.train import fit_parser, train_parser
from viewcoop_core.views import view_ratios

TINY_SPEC = ParserSpec(input_size=32, base_channels=4, depth=2)
FEW_STEPS = TrainSettings(steps=3, batch_size=4, log_every=2)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Two threads on two busy cores spin against each other: 10-40x slower steps here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    """A synthetic set at 32 px: 8 train + 8 gallery + 4 query images with exact masks."""
    root = tmp_path_factory.mktemp("viewparse") / "syn"
    make_synthetic(
        root, SyntheticSpec(num_ids=4, num_cameras=2, images_per_camera=2, image_size=32)
    )
    return root


@pytest.fixture(scope="module")
def tiny_parser(tiny_set, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parser") / "parser.pt"
    train_parser([tiny_set / "image_train"], tiny_set / "masks", out, TINY_SPEC, FEW_STEPS)
    return out


# --- mask files -----------------------------------------------------------------------


def test_mask_png_round_trip_keeps_every_label(tmp_path):
    mask = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(15, 7) % 5
    path = write_mask_atomically(tmp_path, "a.png", mask)
    assert path == tmp_path / "a.png"
    np.testing.assert_array_equal(load_mask(path, expected_size=(7, 15)), mask)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]  # no temporary left behind


def test_a_mask_of_another_size_than_its_image_is_refused_by_name(tmp_path):
    path = write_mask_atomically(tmp_path, "car.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(MaskFormatError, match=r"car\.png is 12x10 .* image is 12x11"):
        load_mask(path, expected_size=(12, 11))


def test_values_outside_0_to_4_and_colour_masks_are_refused_by_name(tmp_path):
    bad = write_mask_atomically(tmp_path, "bad.png", np.full((4, 4), 7, np.uint8))
    with pytest.raises(MaskFormatError, match=r"bad\.png contains values \[7\] outside 0..4"):
        load_mask(bad)
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(MaskFormatError, match=r"rgb\.png has shape \(4, 4, 3\)"):
        load_mask(tmp_path / "rgb.png")


def test_training_on_a_mask_of_the_wrong_size_names_the_file(tiny_set, tmp_path):
    images = tmp_path / "images"
    masks = tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.new("RGB", (32, 32)).save(images / "0001_c001_0_0.jpg")
    write_mask_atomically(masks, "0001_c001_0_0.png", np.zeros((16, 32), np.uint8))
    with pytest.raises(MaskFormatError, match="0001_c001_0_0.png is 32x16"):
        train_parser([images], masks, tmp_path / "p.pt", TINY_SPEC, FEW_STEPS)


def test_pairs_are_matched_by_stem_once_across_folders(tiny_set):
    dirs = [tiny_set / "image_test", tiny_set / "image_query", tiny_set / "image_train"]
    pairs = paired_files(dirs, tiny_set / "masks")
    stems = [image.stem for image, _ in pairs]
    assert len(stems) == len(set(stems)) == 16  # query images are copies of gallery ones
    assert all(image.stem == mask.stem for image, mask in pairs)


# --- scores ---------------------------------------------------------------------------


def naive_scores(pairs, size):
    """IoU by explicit pixel loops and ratio error by the views module, for reference."""
    inter, union, errors = [0] * 5, [0] * 5, []
    for predicted, truth in pairs:
        for p, t in zip(predicted.ravel().tolist(), truth.ravel().tolist()):
            for label in range(5):
                inter[label] += p == label and t == label
                union[label] += p == label or t == label
        diff = view_ratios(predicted, 16, (size, size)) - view_ratios(truth, 16, (size, size))
        errors.append(np.abs(diff).mean())
    iou = [i / u for i, u in zip(inter, union)]
    return iou, float(np.mean(errors))


def test_scores_match_a_naive_reference():
    rng = np.random.default_rng(0)
    pairs = [
        (
            rng.integers(0, 5, (24, 20)).astype(np.uint8),
            rng.integers(0, 5, (24, 20)).astype(np.uint8),
        )
        for _ in range(3)
    ]
    scores = score_masks(pairs, ratio_image_size=32)
    iou, mae = naive_scores(pairs, 32)
    names = ["background", "front", "back", "top", "side"]
    for label, name in enumerate(names):
        assert scores[f"iou_{name}"] == pytest.approx(iou[label])
    assert scores["mean_iou"] == pytest.approx(np.mean(iou[1:]))
    assert scores["ratio_mae_patch16"] == pytest.approx(mae)
    assert set(scores) >= {"ratio_mae_patch8", "ratio_mae_patch32", "ratio_mae_pixel"}


def test_a_perfect_prediction_scores_one_and_zero():
    truth = np.zeros((32, 32), np.uint8)
    truth[4:20, 2:30] = 4
    truth[20:28, 2:30] = 1
    truth[2:4, 2:30] = 3
    truth[8:12, 8:12] = 2
    scores = score_masks([(truth, truth)], ratio_image_size=64)
    assert scores["mean_iou"] == 1.0
    assert all(scores[k] == 0.0 for k in scores if k.startswith("ratio_mae"))


# --- model and checkpoints -------------------------------------------------------------


def test_parser_output_has_one_logit_per_class_and_pixel_for_any_stem():
    for stem in (1, 2):
        spec = ParserSpec(input_size=32, base_channels=4, depth=2, stem_stride=stem)
        logits = build_parser(spec)(torch.zeros(2, 3, 32, 32))
        assert logits.shape == (2, 5, 32, 32)
    with pytest.raises(ValueError, match="multiple of stem_stride"):
        ParserSpec(input_size=36, depth=3)


def test_checkpoint_round_trip_is_weights_only_and_keeps_the_architecture(tmp_path):
    spec = ParserSpec(input_size=32, base_channels=4, depth=2, stem_stride=2)
    model = build_parser(spec).eval()
    path = save_parser(tmp_path / "p.pt", model, {"steps": 3})
    state = torch.load(path, weights_only=True)
    assert state["spec"]["stem_stride"] == 2 and state["training"] == {"steps": 3}
    loaded, training = load_parser(path)
    assert loaded.spec == spec and training == {"steps": 3}
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_files_that_are_not_parser_checkpoints_are_refused_by_name(tmp_path):
    torch.save({"model": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ParserCheckpointError, match="other.pt is not a view-parser"):
        read_parser_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ParserCheckpointError, match="junk.pt is not a loadable"):
        load_parser(tmp_path / "junk.pt")


def test_training_lowers_the_loss_on_a_learnable_task():
    # Left half front (red), right half side (blue): a task the parser must learn.
    images = np.zeros((8, 3, 32, 32), np.uint8)
    images[:, 0, :, :16] = 220
    images[:, 2, :, 16:] = 220
    masks = np.zeros((8, 32, 32), np.uint8)
    masks[:, :, :16], masks[:, :, 16:] = 1, 4
    settings = TrainSettings(steps=60, batch_size=4, lr=1e-2, log_every=10)
    model, history = fit_parser(images, masks, TINY_SPEC, settings)
    assert history[-1] < 0.5 * history[0]
    predicted = model(model.normalise(torch.from_numpy(images[:1]))).argmax(1)[0].numpy()
    assert (predicted == masks[0]).mean() > 0.9


def test_flip_averaged_masks_mirror_with_their_image():
    # What the mirror average guarantees (and a plain forward pass does not): the mask of
    # the mirror image is the mirror of the image's mask, pixel for pixel.
    torch.manual_seed(0)
    model = build_parser(TINY_SPEC).eval()
    batch = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    sizes = [(32, 32)] * 4
    for flip, always_mirrors in ((True, True), (False, False)):
        masks = predict_batch(model, batch, sizes, flip=flip)
        mirrored = predict_batch(model, batch.flip(-1), sizes, flip=flip)
        mirrors = all(np.array_equal(m[:, ::-1], n) for m, n in zip(masks, mirrored))
        assert mirrors == always_mirrors
    # ... and it is the argmax of the mean of the two passes' logits (a naive loop).
    with torch.no_grad():
        x = model.normalise(batch)
        for row in range(4):
            one = x[row : row + 1]
            mean = (model(one)[0] + torch.flip(model(torch.flip(one, [3])), [3])[0]) / 2
            expected = mean.argmax(0).numpy()
            assert np.array_equal(
                predict_batch(model, batch[row : row + 1], sizes[:1])[0], expected
            )


# --- train / predict / evaluate on a tiny set ------------------------------------------


def test_predict_writes_one_mask_per_image_the_size_of_the_image(tiny_set, tiny_parser, tmp_path):
    out = tmp_path / "pred"
    summary = predict_folder(
        [tiny_set / "image_train"], tiny_parser, out, batch_size=3, device="cpu"
    )
    images = sorted((tiny_set / "image_train").iterdir())
    assert summary.predicted == len(images) == 8 and summary.already_done == 0
    for image in images:
        mask = load_mask(out / f"{image.stem}.png", expected_size=Image.open(image).size)
        assert mask.max() <= 4


def test_predict_refuses_a_folder_it_did_not_create(tiny_set, tiny_parser, tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(ForeignOutputError):
        predict_folder([tiny_set / "image_train"], tiny_parser, tmp_path, device="cpu")


class Interrupt(Exception):
    pass


def test_an_interrupted_predict_resumes_without_redoing_finished_masks(
    tiny_set, tiny_parser, tmp_path, monkeypatch
):
    out = tmp_path / "pred"

    def stop_after_first_batch(done, total):
        if done:
            raise Interrupt

    with pytest.raises(Interrupt):
        predict_folder(
            [tiny_set / "image_train"],
            tiny_parser,
            out,
            batch_size=3,
            device="cpu",
            progress=stop_after_first_batch,
        )
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert len(first) == 3
    assert not list(out.glob(".*.tmp"))
    (out / ".0001_c001_00000000_0.999999999.tmp").write_bytes(b"half")  # a dead writer's

    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(
        predict_module.os, "scandir", lambda p: listed.append(Path(p)) or real_scandir(p)
    )
    summary = predict_folder(
        [tiny_set / "image_train"], tiny_parser, out, batch_size=3, device="cpu"
    )
    assert (summary.predicted, summary.already_done) == (5, 3)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name in first} == first
    assert len(list(out.glob("*.png"))) == 8 and not list(out.glob(".*.tmp"))


def test_a_folder_is_not_resumed_with_another_parser_or_flip_setting(
    tiny_set, tiny_parser, tmp_path
):
    out, images = tmp_path / "pred", [tiny_set / "image_train"]
    predict_folder(images, tiny_parser, out, device="cpu")
    other = tmp_path / "other.pt"
    save_parser(other, build_parser(TINY_SPEC), {"untrained": True})
    for checkpoint, flip in ((other, True), (tiny_parser, False)):
        with pytest.raises(ValueError, match=f"the 8 masks in {out} were made by parser"):
            predict_folder(images, checkpoint, out, device="cpu", flip=flip)
    # The same parser and setting resume it (nothing left to do).
    assert predict_folder(images, tiny_parser, out, device="cpu").already_done == 8
    # A folder of an older release (masks, no record) is not taken for this parser's.
    (out / SOURCE_FILE).write_text("{half")
    with pytest.raises(ValueError, match="is not readable"):
        predict_folder(images, tiny_parser, out, device="cpu")
    (out / SOURCE_FILE).unlink()
    with pytest.raises(ValueError, match="no record of the parser that made them"):
        predict_folder(images, tiny_parser, out, device="cpu")
    # Emptied of masks, the folder takes another parser.
    for mask in out.glob("*.png"):
        mask.unlink()
    assert predict_folder(images, other, out, device="cpu").predicted == 8
    assert json.loads((out / SOURCE_FILE).read_text())["checkpoint_sha256"] == file_digest(other)


def test_the_input_folder_is_listed_once(tiny_set, tiny_parser, tmp_path, monkeypatch):
    from viewcoop_core.viewparse import files

    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(files.os, "scandir", lambda p: listed.append(Path(p)) or real_scandir(p))
    predict_folder([tiny_set / "image_train"], tiny_parser, tmp_path / "pred", device="cpu")
    assert listed.count(tiny_set / "image_train") == 1


def test_the_cli_refuses_a_process_count_that_is_not_a_number(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "parse-views",
                "train",
                "--images",
                "x",
                "--masks",
                "y",
                "--out",
                "z",
                "--processes",
                "0",
            ]
        )
    assert "--processes must be auto or a whole number >= 1, got '0'" in capsys.readouterr().err


def test_evaluate_reports_iou_and_ratio_errors(tiny_set, tiny_parser):
    scores = evaluate_parser(
        [tiny_set / "image_test"], tiny_set / "masks", tiny_parser, ratio_image_size=64
    )
    assert scores["num_images"] == 8
    assert 0.0 <= scores["mean_iou"] <= 1.0
    for mode in ("patch8", "patch16", "patch32", "pixel"):
        assert 0.0 <= scores[f"ratio_mae_{mode}"] <= 1.0


def test_the_cli_trains_predicts_and_evaluates(tiny_set, tmp_path):
    checkpoint, out, report = tmp_path / "p.pt", tmp_path / "pred", tmp_path / "scores.json"
    common = ["--images", str(tiny_set / "image_train"), "--device", "cpu"]
    assert (
        main(
            [
                "parse-views",
                "train",
                *common,
                "--masks",
                str(tiny_set / "masks"),
                "--out",
                str(checkpoint),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--input-size",
                "32",
                "--base-channels",
                "4",
                "--depth",
                "2",
                "--detail-channels",
                "3",
                "--boundary-weight",
                "2",
            ]
        )
        == 0
    )
    saved = torch.load(checkpoint, weights_only=True)
    spec = saved["spec"]
    assert (spec["input_size"], spec["base_channels"], spec["detail_channels"]) == (32, 4, 3)
    # auto: batches of 2 do not split into shares of 8, so one process
    assert saved["training"]["processes"] == 1
    assert saved["training"]["settings"]["boundary_weight"] == 2.0
    assert (
        main(
            ["parse-views", "predict", *common, "--checkpoint", str(checkpoint), "--out", str(out)]
        )
        == 0
    )
    assert len(list(out.glob("*.png"))) == 8
    plain = tmp_path / "plain"
    predict_args = ["--checkpoint", str(checkpoint), "--out", str(plain), "--no-flip"]
    assert main(["parse-views", "predict", *common, *predict_args]) == 0
    assert json.loads((plain / SOURCE_FILE).read_text())["flip"] is False
    assert (
        main(
            [
                "parse-views",
                "evaluate",
                *common,
                "--masks",
                str(tiny_set / "masks"),
                "--checkpoint",
                str(checkpoint),
                "--json",
                str(report),
            ]
        )
        == 0
    )
    assert "mean_iou" in report.read_text()
