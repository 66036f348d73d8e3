"""The GPU code paths of the engine, checked on the CPU: the device image cache and its
batched augmentation, fused-Adam selection, the sync-free epoch loop, features kept on
the device, and the TrainConfig switches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from viewcoop_core.config import ConfigError, OptimConfig, TrainConfig
from viewcoop_core.data.transforms import build_test_transform
from viewcoop_core.data.types import ReidSample
from viewcoop_core.engine import acceleration, train
from viewcoop_core.engine.device_cache import (
    DeviceImageCache,
    pk_batches,
    random_crop,
    random_erase,
)
from viewcoop_core.engine.extract import extract_features, extract_on_device

SIZE = (32, 24)
MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[ReidSample]:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = []
    for k in range(12):
        path = root / f"{k:04d}.png"
        Image.fromarray(rng.integers(0, 256, (40 + k, 30, 3), dtype=np.uint8)).save(path)
        out.append(ReidSample(path=str(path), pid=k // 3, camid=k % 3))
    return out


@pytest.fixture(scope="module")
def cache(samples) -> DeviceImageCache:
    return DeviceImageCache(samples, SIZE, MEAN, STD, CPU)


def test_cached_evaluation_batches_equal_the_test_transform(samples, cache):
    transform = build_test_transform(SIZE, MEAN, STD)
    expected = torch.stack([transform(Image.open(s.path).convert("RGB")) for s in samples])
    batches = list(cache.batches(batch_size=5))
    assert [len(b["index"]) for b in batches] == [5, 5, 2]
    got = torch.cat([b["image"] for b in batches])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    shard = list(cache.batches(batch_size=4, indices=[9, 1, 4]))
    assert torch.equal(shard[0]["index"], torch.tensor([9, 1, 4]))
    torch.testing.assert_close(shard[0]["image"], expected[[9, 1, 4]], rtol=0, atol=1e-6)
    reordered = list(cache.loader_for(samples[::-1], batch_size=4))
    torch.testing.assert_close(torch.cat([b["image"] for b in reordered]), expected.flip(0))
    assert torch.equal(torch.cat([b["index"] for b in reordered]), torch.arange(12))


def test_training_batch_without_augmentation_is_the_evaluation_batch(cache):
    index = torch.tensor([3, 0, 7])
    generator = torch.Generator().manual_seed(0)
    plain = cache.train_batch(index, generator, pad=0, flip_p=0.0, erase_p=0.0)["image"]
    torch.testing.assert_close(plain, cache.test_batch(index)["image"], rtol=0, atol=0)
    flipped = cache.train_batch(index, generator, pad=0, flip_p=1.0, erase_p=0.0)["image"]
    torch.testing.assert_close(flipped, plain.flip(-1), rtol=0, atol=0)


def test_random_crop_is_a_window_of_the_zero_padded_image(cache):
    images = cache.images[:6]
    cropped = random_crop(images, 3, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3))
    offsets = []
    for k in range(6):
        hits = [
            (dy, dx)
            for dy in range(7)
            for dx in range(7)
            if torch.equal(padded[k, :, dy : dy + SIZE[0], dx : dx + SIZE[1]], cropped[k])
        ]
        assert hits, k
        offsets.append(hits[0])
    assert len(set(offsets)) > 1  # offsets differ between images


def test_random_erase_zeroes_one_rectangle_within_torchvision_bounds():
    images = torch.ones(200, 3, 40, 30)
    erased = random_erase(images, 1.0, torch.Generator().manual_seed(2))
    zero = erased[:, 0] == 0
    assert torch.equal(zero, (erased == 0).all(1))  # every channel alike
    shares = zero.float().mean((1, 2))
    assert (shares > 0).float().mean() > 0.9
    for k in torch.nonzero(shares > 0).squeeze(1).tolist():
        rows, cols = zero[k].any(1).nonzero(), zero[k].any(0).nonzero()
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert int(zero[k].sum()) == height * width  # one filled rectangle
        assert 0.01 <= float(shares[k]) <= 0.34
    untouched = random_erase(images, 0.0, torch.Generator().manual_seed(2))
    assert torch.equal(untouched, images)


def test_pk_batches_come_from_the_cache_in_pk_groups(cache):
    labels = np.array([s.pid for s in cache.samples])
    batches = list(pk_batches(cache, labels, 6, 3, num_iters=4, seed=0, epoch=1))
    assert len(batches) == 4
    for batch in batches:
        assert batch["image"].shape == (6, 3, *SIZE)
        groups = labels[batch["index"].numpy()].reshape(2, 3)
        assert (groups == groups[:, :1]).all() and groups[0, 0] != groups[1, 0]
    again = list(pk_batches(cache, labels, 6, 3, num_iters=4, seed=0, epoch=1))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(batches, again))


class _TinyLearner(torch.nn.Module):
    def per_cluster_parameters(self):
        return iter(())


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(4, 2)
        self.prompt_learner = _TinyLearner()


def test_fused_adam_only_where_every_parameter_is_on_cuda():
    model = _Tiny()
    optimizer = train.build_optimizer(model, OptimConfig(), TrainConfig())
    assert not optimizer.defaults.get("fused")
    assert len(optimizer.param_groups) == 3
    off = train.build_optimizer(model, OptimConfig(), TrainConfig(fused_optimizer=False))
    assert not off.defaults.get("fused")


def test_train_epoch_reads_the_loss_terms_once(monkeypatch):
    steps = [torch.tensor(float(k)) for k in range(4)]
    calls = iter(steps)
    monkeypatch.setattr(
        train, "train_step", lambda *a: {"loss": next(calls), "v": torch.tensor(1.0)}
    )
    state = train.TrainState(_Tiny(), None, None, CPU, tau=(1, 2))
    loader = [{"index": torch.arange(3)} for _ in range(4)]
    means = train.train_epoch(state, loader, None, None)
    assert means["loss"] == pytest.approx(1.5) and means["v"] == 1.0
    assert means["train_images_per_s"] > 0


class _Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Flatten()

    def encode_image(self, images):
        return self.visual(images)[:, :8]


def test_features_stay_on_the_device_until_the_end(cache):
    model = _Encoder()
    idx, img, txt = extract_on_device(model, cache.batches(5), CPU, None, amp=False)
    assert txt is None and img.shape == (12, 8) and idx.tolist() == list(range(12))
    np_idx, np_img, _ = extract_features(model, cache.batches(5), CPU, None, amp=False)
    np.testing.assert_array_equal(np_idx, idx.numpy())
    np.testing.assert_allclose(np_img, img.numpy())
    torch.testing.assert_close(img.norm(dim=1), torch.ones(12))


def test_compile_switch_compiles_the_image_encoder_in_place():
    model = _Encoder()
    keys = set(model.state_dict())
    assert acceleration.accelerate(model, TrainConfig(), CPU) is model
    assert getattr(model.visual, "_compiled_call_impl", None) is None
    acceleration.accelerate(model, TrainConfig(compile=True), CPU)
    assert model.visual._compiled_call_impl is not None
    assert set(model.state_dict()) == keys  # checkpoints keep their keys


def test_image_cache_only_when_asked(samples):
    assert acceleration.image_cache(samples, SIZE, MEAN, STD, TrainConfig(), CPU) is None
    built = acceleration.image_cache(
        samples[:2], SIZE, MEAN, STD, TrainConfig(device_cache=True), CPU
    )
    assert built.images.dtype == torch.uint8 and built.images.shape == (2, 3, *SIZE)


@pytest.mark.parametrize("field", ["fused_optimizer", "compile", "device_cache", "amp"])
def test_gpu_switches_are_validated_by_name(field):
    with pytest.raises(ConfigError, match=f"train.{field}"):
        TrainConfig(**{field: "yes"})
