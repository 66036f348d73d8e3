"""Contrastive pretraining of the tiny CLIP on captioned synthetic vehicles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from viewcoop_core.data.transforms import build_test_transform
from viewcoop_core.models.clip import SMALL_MODEL_NAME, TINY_MODEL_NAME, build_clip
from viewcoop_core.models.shipped import ShippedWeightsError, file_sha256, shipped_weights
from viewcoop_core.outputs import ForeignOutputError
from viewcoop_core.synthetic import SyntheticSpec, make_synthetic, pretrain
from viewcoop_core.synthetic.captions import caption_for, dominant_view, read_captioned_images
from viewcoop_core.synthetic.pretrain import clip_contrastive_loss, pretrain_clip, train_step
from viewcoop_core.synthetic.recipe import PretrainRecipe
from viewcoop_core.synthetic.weights import make_synthetic_clip_weights

TINY_SET = {"num_ids": 4, "num_cameras": 2, "images_per_camera": 2, "image_size": 64}

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


def test_schedule_warms_up_then_anneals_by_steps():
    factor = pretrain._learning_rate_factor
    assert factor(0.0) == pytest.approx(0.01)
    assert factor(0.1) == pytest.approx(1.0)  # end of the 10 % warmup
    assert factor(0.55) == pytest.approx(0.5)  # half way down the cosine
    assert factor(1.0) == pytest.approx(0.0, abs=1e-12)


def _outputs(bundle, image_size: int):
    torch.manual_seed(123)
    pixels = torch.randn(2, 3, image_size, image_size)
    tokens = bundle.tokenizer(["a photo of a red bus, seen from the side."])
    with torch.no_grad():
        return bundle.model.eval().encode_image(pixels), bundle.model.encode_text(tokens)


def _recipe(**changes) -> PretrainRecipe:
    spec = SyntheticSpec(seed=1000, **TINY_SET)
    return PretrainRecipe(**{"spec": spec, "steps": 3, "batch_size": 8, **changes})


def test_pretraining_writes_weights_that_build_clip_loads(tiny_set, tmp_path):
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    out = tmp_path / "w.safetensors"
    summary = pretrain_clip(tiny_set, out, _recipe(seed=7))
    assert torch.equal(torch.rand(3), before)  # the caller's RNG stream is untouched
    assert (summary.steps, summary.num_images, summary.epochs) == (3, 16, 1.5)
    record = json.loads(out.with_suffix(".json").read_text())
    assert PretrainRecipe.from_dict(record["recipe"]) == _recipe(seed=7)

    loaded = build_clip(TINY_MODEL_NAME, pretrained=str(out), image_size=64)
    torch.manual_seed(7)  # the initialisation pretraining started from
    initial = build_clip(TINY_MODEL_NAME, image_size=64)
    assert load_file(str(out)).keys() == initial.model.state_dict().keys()
    for trained, start in zip(_outputs(loaded, 64), _outputs(initial, 64)):
        assert not torch.allclose(trained, start, atol=1e-3)


def test_pretraining_the_small_architecture_records_it(tiny_set, tmp_path):
    out = tmp_path / "small.safetensors"
    pretrain_clip(tiny_set, out, _recipe(model=SMALL_MODEL_NAME))
    record = json.loads(out.with_suffix(".json").read_text())
    assert PretrainRecipe.from_dict(record["recipe"]).model == SMALL_MODEL_NAME
    loaded = build_clip(SMALL_MODEL_NAME, pretrained=str(out), image_size=64)
    assert loaded.embed_dim == 128
    with pytest.raises(ValueError, match="do not fit this CLIP architecture"):
        build_clip(TINY_MODEL_NAME, pretrained=str(out), image_size=64)
    # A record written before recipes named their architecture is the tiny CLIP's.
    older = {k: v for k, v in record["recipe"].items() if k != "model"}
    assert PretrainRecipe.from_dict(older).model == TINY_MODEL_NAME
    with pytest.raises(ValueError, match="model='ViT-B-16'.*viewcoop-tiny"):
        _recipe(model="ViT-B-16")


def test_a_recipe_gives_the_same_weights_and_another_seed_other_weights(tmp_path):
    a = tmp_path / "a.safetensors"
    make_synthetic_clip_weights(a, _recipe(), tmp_path / "work")
    make_synthetic_clip_weights(tmp_path / "b.safetensors", _recipe(), tmp_path / "work")
    make_synthetic_clip_weights(tmp_path / "c.safetensors", _recipe(seed=1), tmp_path / "work")
    sha = {p.stem: json.loads(p.with_suffix(".json").read_text())["sha256"] for p in [a]}
    assert sha["a"] == file_sha256(a) == file_sha256(tmp_path / "b.safetensors")
    assert file_sha256(tmp_path / "c.safetensors") != sha["a"]


def test_pretraining_refuses_a_file_it_did_not_write_and_bad_recipes(tiny_set, tmp_path):
    foreign = tmp_path / "mine.safetensors"
    foreign.write_bytes(b"a user's file")
    with pytest.raises(ForeignOutputError, match="mine.safetensors"):
        make_synthetic_clip_weights(foreign, _recipe(), tmp_path / "work")
    assert foreign.read_bytes() == b"a user's file"
    with pytest.raises(ValueError, match=".safetensors"):
        pretrain_clip(tiny_set, tmp_path / "w.pt", _recipe())
    with pytest.raises(ValueError, match="batch_size"):
        pretrain_clip(tiny_set, tmp_path / "w.safetensors", _recipe(batch_size=64))
    with pytest.raises(ValueError, match="view_caption_p"):
        _recipe(view_caption_p=1.5)
    with pytest.raises(ValueError, match="steps"):
        _recipe(steps=0)


@pytest.mark.parametrize("architecture", [TINY_MODEL_NAME, SMALL_MODEL_NAME])
def test_shipped_weights_load_and_match_their_checksum(architecture):
    path = shipped_weights("synthetic", architecture)
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == file_sha256(path)
    recipe = PretrainRecipe.from_dict(record["recipe"])
    # `viewcoop pretrain-tiny --model <architecture>` with its defaults remakes them.
    assert recipe == PretrainRecipe(model=architecture)
    bundle = build_clip(architecture, pretrained="synthetic", image_size=128)
    plain = build_clip(architecture, pretrained=str(path), image_size=128)
    for a, b in zip(_outputs(bundle, 128), _outputs(plain, 128)):
        torch.testing.assert_close(a, b)


def test_damaged_shipped_weights_are_named(tmp_path):
    real = shipped_weights("synthetic", TINY_MODEL_NAME)
    (tmp_path / real.name).write_bytes(real.read_bytes()[:-10] + b"0123456789")
    (tmp_path / real.with_suffix(".json").name).write_text(real.with_suffix(".json").read_text())
    with pytest.raises(ShippedWeightsError, match=f"{real.name} has SHA-256"):
        shipped_weights("synthetic", TINY_MODEL_NAME, weights_dir=tmp_path)
    (tmp_path / real.name).unlink()
    with pytest.raises(ShippedWeightsError, match="missing"):
        shipped_weights("synthetic", TINY_MODEL_NAME, weights_dir=tmp_path)
    with pytest.raises(ValueError, match="ships weights for 'viewcoop-tiny'"):
        shipped_weights("synthetic", "ViT-B-16")


def test_shipped_weights_load_at_another_input_size():
    """fp16 weights at 128 px resized to a 64 px patch grid (the resize has no fp16 CPU kernel)."""
    bundle = build_clip(TINY_MODEL_NAME, pretrained="synthetic", image_size=64)
    assert bundle.image_size == 64
    pos = bundle.model.visual.positional_embedding
    assert pos.dtype == torch.float32 and pos.shape[0] == 1 + (64 // 16) ** 2
