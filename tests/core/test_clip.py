"""CLIP factory and encoders, on the tiny registered architecture (nothing downloads)."""

from __future__ import annotations

import copy
import logging

import open_clip
import pytest
import torch
import torch.nn.functional as F

from viewcoop_core.models.clip import (
    SMALL_MODEL_NAME,
    TINY_MODEL_NAME,
    build_clip,
    count_parameters,
    encode_image,
    encode_text_embeddings,
    register_project_model,
)

SENTENCES = [
    "a photo of a car",
    "A photo of a X X X X vehicle with the proportions of front view is 37 percent.",
    "red",
    "the quick brown fox jumps over the lazy dog " * 12,  # longer than 77 tokens: truncated
]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    bundle = build_clip(TINY_MODEL_NAME, image_size=None)
    bundle.model.eval()
    return bundle


def _outputs(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def test_small_model_doubles_every_width_of_the_tiny_one():
    assert register_project_model(SMALL_MODEL_NAME) == SMALL_MODEL_NAME
    assert open_clip.list_models().count(SMALL_MODEL_NAME) == 1
    small = build_clip(SMALL_MODEL_NAME, image_size=64).model
    tiny = build_clip(TINY_MODEL_NAME, image_size=64).model
    assert small.visual.conv1.out_channels == 2 * tiny.visual.conv1.out_channels == 128
    assert small.token_embedding.embedding_dim == 2 * tiny.token_embedding.embedding_dim == 64
    assert small.text_projection.shape == (64, 128)
    assert len(small.visual.transformer.resblocks) == len(tiny.visual.transformer.resblocks)
    with pytest.raises(ValueError, match="use the project's 'viewcoop-tiny', 'viewcoop-small'"):
        build_clip("viewcoop-huge")


def test_tiny_model_registers_once_and_builds_at_requested_size(caplog):
    assert register_project_model() == register_project_model() == TINY_MODEL_NAME
    assert open_clip.list_models().count(TINY_MODEL_NAME) == 1

    with caplog.at_level(logging.INFO, logger="viewcoop_core.models.clip"):
        default = build_clip(TINY_MODEL_NAME, image_size=None)
    assert default.image_size == 128
    assert "parameters" in caplog.text
    resized = build_clip(TINY_MODEL_NAME, image_size=64)
    assert resized.image_size == 64
    assert resized.model.visual.positional_embedding.shape[0] == (64 // 16) ** 2 + 1
    assert resized.embed_dim == 64
    # The real vocabulary dominates; the towers themselves are tiny.
    assert count_parameters(default.model) < 2_500_000
    assert default.model.token_embedding.num_embeddings == 49408
    assert default.tokenizer.context_length == 77


def test_no_random_init_warning_when_weights_follow_or_random_init_was_asked(
    tiny, tmp_path, caplog
):
    weights = tmp_path / "clip.pt"
    torch.save(tiny.model.state_dict(), weights)
    with caplog.at_level(logging.INFO):
        open_clip.create_model(TINY_MODEL_NAME)  # open_clip itself warns ...
    assert "initialized randomly" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        build_clip(TINY_MODEL_NAME, pretrained=str(weights), image_size=None)
        build_clip(TINY_MODEL_NAME, image_size=None)
        logging.getLogger().warning("another root warning")  # ... only that record goes
    assert "initialized randomly" not in caplog.text
    assert "loaded CLIP weights" in caplog.text and "random init" in caplog.text
    assert "another root warning" in caplog.text


def test_encode_image_shapes_and_agreement_with_open_clip(tiny):
    images = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        global_features, patch_features = encode_image(tiny.model, images)
        expected_global = tiny.model.encode_image(images)
        # Independent path: open_clip's own forward with its token output switched on.
        visual = copy.deepcopy(tiny.model.visual)
        visual.output_tokens = True
        _, raw_tokens = visual(images)
    assert global_features.shape == (3, 64)
    assert patch_features.shape == (3, (128 // 16) ** 2, 64)
    torch.testing.assert_close(global_features, expected_global, rtol=0, atol=1e-5)
    torch.testing.assert_close(patch_features, raw_tokens @ visual.proj, rtol=0, atol=1e-5)


def test_encode_text_embeddings_equals_encode_text(tiny):
    model = tiny.model
    tokens = tiny.tokenizer(SENTENCES)
    eot = tokens.argmax(-1)
    with torch.no_grad():
        expected = model.encode_text(tokens)
        ours = encode_text_embeddings(model, model.token_embedding(tokens), eot)
        # Padding only to the longest EOT is exact under the causal mask.
        length = int(eot.max()) + 1
        short = encode_text_embeddings(model, model.token_embedding(tokens[:, :length]), eot)
    assert (ours - expected).abs().max() <= 1e-5
    assert (short - expected).abs().max() <= 1e-5
    assert int(eot[-1]) == 76  # the long sentence really was truncated


def test_encode_text_embeddings_rejects_bad_eot(tiny):
    embeddings = torch.zeros(2, 10, 32)
    with pytest.raises(ValueError, match="eot_indices"):
        encode_text_embeddings(tiny.model, embeddings, torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="context length"):
        encode_text_embeddings(tiny.model, torch.zeros(1, 78, 32), torch.tensor([5]))


@pytest.mark.parametrize("nesting", ["plain", "state_dict", "model", "ddp_prefix"])
def test_local_pt_weights_reproduce_outputs(tiny, tmp_path, nesting):
    state = tiny.model.state_dict()
    payload = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer": {}},
        "ddp_prefix": {f"module.{k}": v for k, v in state.items()},
    }[nesting]
    path = tmp_path / "clip.pt"
    torch.save(payload, path)

    torch.manual_seed(123)  # a different random init, fully overwritten by the file
    loaded = build_clip(TINY_MODEL_NAME, pretrained=str(path), image_size=None).model.eval()
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    tokens = tiny.tokenizer(SENTENCES[:2])
    for ours, expected in zip(
        _outputs(loaded, images, tokens), _outputs(tiny.model, images, tokens)
    ):
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_local_safetensors_weights_reproduce_outputs(tiny, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "clip.safetensors"
    state = {k: v.contiguous() for k, v in tiny.model.state_dict().items()}
    safetensors_torch.save_file(state, str(path))
    torch.manual_seed(321)
    loaded = build_clip(TINY_MODEL_NAME, pretrained=str(path), image_size=None).model.eval()
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    tokens = tiny.tokenizer(SENTENCES[:2])
    for ours, expected in zip(
        _outputs(loaded, images, tokens), _outputs(tiny.model, images, tokens)
    ):
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_positional_embedding_is_resized_to_the_new_grid(tmp_path):
    torch.manual_seed(5)
    small = build_clip(TINY_MODEL_NAME, image_size=64).model  # 4x4 patch grid
    path = tmp_path / "clip_64.pth"
    torch.save(small.state_dict(), path)

    large = build_clip(TINY_MODEL_NAME, pretrained=str(path), image_size=128).model  # 8x8
    old = small.visual.positional_embedding.detach()
    new = large.visual.positional_embedding.detach()
    assert new.shape == (8 * 8 + 1, old.shape[1])
    torch.testing.assert_close(new[0], old[0])  # the CLS position is carried over as is
    grid = old[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    reference = F.interpolate(
        grid, size=(8, 8), mode="bicubic", antialias=True, align_corners=False
    )
    torch.testing.assert_close(new[1:], reference.permute(0, 2, 3, 1).reshape(64, -1))
    torch.testing.assert_close(large.visual.conv1.weight, small.visual.conv1.weight)
    with torch.no_grad():
        features, patches = encode_image(large, torch.randn(1, 3, 128, 128))
    assert features.shape == (1, 64) and patches.shape == (1, 64, 64)


def test_errors_name_what_to_fix(tmp_path, tiny):
    with pytest.raises(ValueError, match="unknown CLIP architecture.*viewcoop-tiny"):
        build_clip("ViT-Q-99")
    with pytest.raises(ValueError, match="multiple of .*patch size 16"):
        build_clip(TINY_MODEL_NAME, image_size=100)
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        build_clip(TINY_MODEL_NAME, pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="neither an existing weights file nor an open_clip tag"):
        build_clip(TINY_MODEL_NAME, pretrained="laion-nonexistent")

    wrong_suffix = tmp_path / "weights.txt"
    wrong_suffix.write_text("not weights")
    with pytest.raises(ValueError, match="must end in one of"):
        build_clip(TINY_MODEL_NAME, pretrained=str(wrong_suffix))

    state = tiny.model.state_dict()
    state.pop("ln_final.weight")
    state["extra.weight"] = torch.zeros(1)
    mismatched = tmp_path / "mismatched.pt"
    torch.save(state, mismatched)
    with pytest.raises(ValueError, match="missing.*ln_final.weight.*unexpected.*extra.weight"):
        build_clip(TINY_MODEL_NAME, pretrained=str(mismatched), image_size=None)
