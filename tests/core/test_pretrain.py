"""Contrastive pretraining of the tiny CLIP on captioned synthetic vehicles."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from viewcoop_core.data.transforms import build_test_transform
from viewcoop_core.models.clip import TINY_MODEL_NAME, build_clip
from viewcoop_core.synthetic import SyntheticSpec, make_synthetic, pretrain
from viewcoop_core.synthetic.captions import caption_for, dominant_view, read_captioned_images
from viewcoop_core.synthetic.pretrain import clip_contrastive_loss, pretrain_clip, train_step
from viewcoop_core.synthetic.weights import ensure_pretrained_tiny_clip

TINY_SET = {"num_ids": 4, "num_cameras": 2, "images_per_camera": 2, "image_size": 64}
TINY_TRAINING = {"image_size": 64, "epochs": 1, "batch_size": 8}

RED_SEDAN = {
    "body_type": "sedan",
    "colour_name": "red",
    "cargo_colour": "white",
    "stripe": "double",
    "stripe_colour": "yellow",
    "roof_item": "rack",
    "roof_colour": "black",
    "sticker": "windshield_left",
    "sticker_colour": "blue",
    "wheel_style": "spoke",
    "hub_colour": "silver",
}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "set"
    make_synthetic(out, SyntheticSpec(seed=1000, **TINY_SET))
    return out


# ----------------------------------------------------------------------------- captions


def test_caption_names_type_colour_marks_and_view():
    caption = caption_for(RED_SEDAN, "front")
    for phrase in (
        "red sedan",
        "yellow side stripes",
        "black roof rack",
        "blue windshield sticker",
        "silver spoked wheels",
        "seen from the front",
    ):
        assert phrase in caption, phrase
    # Flips are part of the augmentation, so the sticker's side is never named.
    assert "left" not in caption
    assert caption.startswith("a photo of a red sedan with ") and caption.endswith(".")


def test_caption_words_for_unnamed_colours_trucks_plain_vehicles_and_no_view():
    plain_truck = {
        **RED_SEDAN,
        "body_type": "truck",
        "colour_name": "sky",
        "cargo_colour": "white",
        "stripe": None,
        "roof_item": None,
        "sticker": None,
        "wheel_style": "dark",
    }
    caption = caption_for(plain_truck, None)
    assert caption == (
        "a photo of a light blue truck with a white cargo box and dark wheels with silver centres."
    )
    assert "an orange SUV" in caption_for(
        {**plain_truck, "body_type": "suv", "colour_name": "orange"}, "back"
    )
    assert caption_for(RED_SEDAN, "top").endswith("seen from above.")
    single_orange = {**RED_SEDAN, "stripe": "single", "stripe_colour": "orange"}
    assert "with an orange side stripe, " in caption_for(single_orange, None)


def test_caption_rejects_unknown_view_and_incomplete_attributes():
    with pytest.raises(ValueError, match="front"):
        caption_for(RED_SEDAN, "left")
    with pytest.raises(KeyError, match="colour_name"):
        caption_for({"body_type": "bus"}, None)


def test_longest_caption_fits_the_context():
    longest = {
        **RED_SEDAN,
        "body_type": "truck",
        "roof_item": "light_bar",
        "roof_colour": "red_blue",
        "sticker": "rear",
        "wheel_style": "dark",
    }
    bundle = build_clip(TINY_MODEL_NAME, image_size=64)
    tokens = bundle.tokenizer([caption_for(longest, "side")])
    assert int(tokens.argmax(-1)) < bundle.tokenizer.context_length - 1  # EOT not truncated


def test_dominant_view_matches_pixel_counting():
    rng = np.random.default_rng(0)
    names = {1: "front", 2: "back", 3: "top", 4: "side"}
    for _ in range(20):
        mask = rng.choice(5, size=(12, 10), p=[0.4, 0.1, 0.15, 0.15, 0.2]).astype(np.uint8)
        counts = {label: int((mask == label).sum()) for label in names}
        best = max(counts.values())
        winners = {names[label] for label, count in counts.items() if count == best}
        assert dominant_view(mask) in winners
    assert dominant_view(np.zeros((8, 8), np.uint8)) is None


def test_captioned_images_cover_train_and_gallery_with_their_identity(tiny_set):
    meta = json.loads((tiny_set / "meta.json").read_text())
    identities = {entry["vid"]: entry for entry in meta["identities"]}
    pairs = read_captioned_images(tiny_set)
    expected = {r["name"] for r in meta["images"] if r["split"] in ("train", "gallery")}
    assert {Path(p.path).name for p in pairs} == expected  # query copies left out
    for pair in pairs:
        mask = np.asarray(Image.open(tiny_set / "masks" / f"{Path(pair.path).stem}.png"))
        assert pair.view == dominant_view(mask)
        assert pair.caption == caption_for(identities[pair.vid], pair.view)
        assert pair.identity_caption == caption_for(identities[pair.vid], None)


def test_read_captioned_images_explains_a_missing_meta_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_synthetic"):
        read_captioned_images(tmp_path)


def test_each_image_names_its_view_with_the_requested_probability(tiny_set):
    pairs = read_captioned_images(tiny_set)
    tokenizer = build_clip(TINY_MODEL_NAME, image_size=64).tokenizer
    table = pretrain._CaptionTable.build(pairs, tokenizer)
    batch = torch.arange(len(pairs))
    torch.manual_seed(0)
    always = table.tokens[table.sample(batch, 1.0)]
    assert torch.equal(always, tokenizer([p.caption for p in pairs]))
    never = table.tokens[table.sample(batch, 0.0)]
    assert torch.equal(never, tokenizer([p.identity_caption for p in pairs]))
    draws = torch.cat([table.sample(batch, 0.3) for _ in range(200)])
    names_view = (draws == table.with_view.repeat(200)).float().mean()
    assert float(names_view) == pytest.approx(0.3, abs=0.03)


# ----------------------------------------------------------------------------- loss


def _naive_loss(image_features, text_features, caption_index, scale):
    """Per-row loops: image i against every caption, caption u against every image."""
    img = [v / v.norm() for v in image_features]
    txt = [t / t.norm() for t in text_features]
    i2t = 0.0
    for i, v in enumerate(img):
        logits = [scale * float(v @ t) for t in txt]
        i2t += -logits[caption_index[i]] + math.log(sum(math.exp(x) for x in logits))
    t2i = 0.0
    for u, t in enumerate(txt):
        logits = [scale * float(v @ t) for v in img]
        log_norm = math.log(sum(math.exp(x) for x in logits))
        mine = [i for i in range(len(img)) if caption_index[i] == u]
        t2i += sum(log_norm - logits[i] for i in mine) / len(mine)
    return (i2t / len(img) + t2i / len(txt)) / 2


def test_loss_matches_naive_reference_with_shared_captions():
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(6, 5, generator=generator), torch.randn(3, 5, generator=generator)
    caption_index = torch.tensor([0, 2, 1, 0, 2, 2])
    scale = torch.tensor(math.log(10.0))
    got = clip_contrastive_loss(images, texts, caption_index, scale)
    assert float(got) == pytest.approx(
        _naive_loss(images, texts, caption_index.tolist(), 10.0), rel=1e-5
    )


def test_loss_with_distinct_captions_is_open_clips_loss():
    from open_clip.loss import ClipLoss

    generator = torch.Generator().manual_seed(1)
    images, texts = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)
    scale = torch.tensor(math.log(20.0))
    reference = ClipLoss()(F.normalize(images, dim=-1), F.normalize(texts, dim=-1), 20.0)
    got = clip_contrastive_loss(images, texts, torch.arange(5), scale)
    assert float(got) == pytest.approx(float(reference), rel=1e-5)


def test_train_steps_decrease_the_loss_on_a_fixed_batch(tiny_set):
    torch.manual_seed(0)
    bundle = build_clip(TINY_MODEL_NAME, image_size=64)
    pairs = read_captioned_images(tiny_set)[:8]
    transform = build_test_transform((64, 64), bundle.mean, bundle.std)  # fixed pixels
    pixels = torch.stack([transform(Image.open(p.path).convert("RGB")) for p in pairs])
    captions = sorted({p.caption for p in pairs})
    tokens = bundle.tokenizer(captions)
    rows = torch.tensor([captions.index(p.caption) for p in pairs])
    optimiser = torch.optim.Adam(bundle.model.parameters(), lr=1e-3)
    losses = [train_step(bundle.model, optimiser, pixels, tokens, rows) for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0]


# ----------------------------------------------------------------------------- training


def test_schedule_warms_up_then_anneals_by_steps_or_by_time():
    by_steps = pretrain._Schedule(lr=1.0, total_steps=100, max_seconds=None)
    assert by_steps.learning_rate(0, elapsed=1e6) == pytest.approx(0.01)  # no time cap
    assert by_steps.learning_rate(10, 0.0) == pytest.approx(1.0)  # end of the 10 % warmup
    assert by_steps.learning_rate(55, 0.0) == pytest.approx(0.5)  # half way down the cosine
    assert by_steps.learning_rate(100, 0.0) == pytest.approx(0.0, abs=1e-12)
    capped = pretrain._Schedule(lr=1.0, total_steps=100, max_seconds=10.0)
    # Whichever budget is more used up sets the progress.
    assert capped.learning_rate(55, elapsed=1.0) == pytest.approx(0.5)
    assert capped.learning_rate(10, elapsed=5.5) == pytest.approx(0.5)
    assert capped.out_of_time(10.0) and not by_steps.out_of_time(1e6)


def _outputs(bundle, image_size: int):
    torch.manual_seed(123)
    pixels = torch.randn(2, 3, image_size, image_size)
    tokens = bundle.tokenizer(["a photo of a red bus, seen from the side."])
    with torch.no_grad():
        return bundle.model.eval().encode_image(pixels), bundle.model.encode_text(tokens)


def test_pretraining_writes_weights_that_build_clip_loads(tiny_set, tmp_path):
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    summary = pretrain_clip(tiny_set, tmp_path / "w.pt", seed=7, **TINY_TRAINING)
    assert torch.equal(torch.rand(3), before)  # the caller's RNG stream is untouched
    assert summary.steps == 2 and summary.epochs_completed == 1  # 16 images, batches of 8
    assert summary.num_images == 16 and not summary.stopped_by_time

    loaded = build_clip(TINY_MODEL_NAME, pretrained=str(tmp_path / "w.pt"), image_size=64)
    torch.manual_seed(7)  # the initialisation pretraining started from
    initial = build_clip(TINY_MODEL_NAME, image_size=64)
    saved = torch.load(tmp_path / "w.pt", weights_only=True)
    assert saved.keys() == initial.model.state_dict().keys()
    for trained, start in zip(_outputs(loaded, 64), _outputs(initial, 64)):
        assert not torch.allclose(trained, start, atol=1e-4)


def test_time_cap_stops_before_the_first_step_and_still_saves(tiny_set, tmp_path):
    summary = pretrain_clip(tiny_set, tmp_path / "w.pt", max_seconds=0.0, **TINY_TRAINING)
    assert summary.stopped_by_time and summary.steps == 0
    build_clip(TINY_MODEL_NAME, pretrained=str(tmp_path / "w.pt"), image_size=64)


def test_pretraining_rejects_bad_arguments(tiny_set, tmp_path):
    with pytest.raises(ValueError, match=".pt"):
        pretrain_clip(tiny_set, tmp_path / "w.safetensors", **TINY_TRAINING)
    with pytest.raises(ValueError, match="batch_size"):
        pretrain_clip(tiny_set, tmp_path / "w.pt", **{**TINY_TRAINING, "batch_size": 64})
    with pytest.raises(ValueError, match="view_caption_p"):
        pretrain_clip(tiny_set, tmp_path / "w.pt", view_caption_p=1.5, **TINY_TRAINING)


def test_ensure_pretrained_trains_once_per_parameter_set(tmp_path, monkeypatch):
    calls = []
    real_pretrain = pretrain.pretrain_clip

    @functools.wraps(real_pretrain)  # keeps the signature the cache key is built from
    def counting_pretrain(*args, **kwargs):
        calls.append(kwargs)
        return real_pretrain(*args, **kwargs)

    monkeypatch.setattr(pretrain, "pretrain_clip", counting_pretrain)
    spec = SyntheticSpec(num_ids=4, num_cameras=2, images_per_camera=2, image_size=64, seed=1000)
    options = {k: v for k, v in TINY_TRAINING.items() if k != "image_size"}
    first = ensure_pretrained_tiny_clip(tmp_path, spec, **options)
    meta = next((tmp_path / "pretrain-data").glob("*/meta.json"))
    data_written = meta.stat().st_mtime_ns
    assert ensure_pretrained_tiny_clip(tmp_path, spec, **options) == first
    assert len(calls) == 1
    assert meta.stat().st_mtime_ns == data_written  # the set was not drawn again

    sidecar = json.loads(first.with_suffix(".json").read_text())
    assert sidecar["parameters"]["data"]["seed"] == 1000
    assert sidecar["summary"]["steps"] == 2

    changed = ensure_pretrained_tiny_clip(tmp_path, spec, **{**options, "lr": 5e-4})
    assert changed != first and len(calls) == 2
    assert meta.stat().st_mtime_ns == data_written  # same data parameters, same set
    build_clip(TINY_MODEL_NAME, pretrained=str(changed), image_size=64)


def test_ensure_pretrained_names_unknown_training_arguments(tmp_path):
    with pytest.raises(TypeError, match="learning_rate"):
        ensure_pretrained_tiny_clip(tmp_path, learning_rate=1e-3)
    assert not any(tmp_path.iterdir())  # refused before drawing anything
