"""P x K pseudo-identity batch sampler: composition, camera preference, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from viewcoop_core.data.sampler import PKSampler, _rank_within_group

K = 4
P = 4


def make_dataset() -> tuple[list[int], list[int]]:
    """Identities with many cameras, few cameras, fewer than K images, plus outliers."""
    rng = np.random.default_rng(0)
    labels: list[int] = []
    camids: list[int] = []
    for identity in range(6):  # 8 images over 6 cameras: >= K cameras
        labels += [identity] * 8
        camids += [0, 0, 1, 1, 2, 3, 4, 5]
    for identity in range(6, 9):  # 5 images over 2 cameras
        labels += [identity] * 5
        camids += [0, 0, 0, 7, 7]
    for identity in (9, 10):  # 2 images, 2 cameras
        labels += [identity] * 2
        camids += [1, 2]
    labels += [11]  # a single image
    camids += [3]
    labels += [-1] * 10  # DBSCAN outliers
    camids += rng.integers(0, 8, size=10).tolist()
    order = rng.permutation(len(labels))  # interleave, so indices are not grouped by label
    return [labels[i] for i in order], [camids[i] for i in order]


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


def make_sampler(dataset, **kwargs) -> PKSampler:
    labels, camids = dataset
    options = {"batch_size": P * K, "num_instances": K, "num_iters": 60, "seed": 0} | kwargs
    return PKSampler(labels, camids, **options)


def groups_of(batch: list[int]) -> list[list[int]]:
    return [batch[i : i + K] for i in range(0, len(batch), K)]


def test_batches_hold_p_identities_with_k_instances_each(dataset):
    labels, _ = dataset
    batches = list(make_sampler(dataset))
    assert len(batches) == 60
    for batch in batches:
        assert len(batch) == P * K
        assert all(isinstance(i, int) for i in batch)
        batch_labels = [labels[i] for i in batch]
        assert -1 not in batch_labels
        counts = Counter(batch_labels)
        assert len(counts) == P and set(counts.values()) == {K}
        for group in groups_of(batch):  # grouped: K consecutive indices per identity
            assert len({labels[i] for i in group}) == 1


def test_instances_prefer_other_cameras_then_anchor_camera_then_repeats(dataset):
    labels, camids = dataset
    indices_of: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        if label >= 0:
            indices_of.setdefault(label, []).append(index)
    seen_identities = set()
    for batch in make_sampler(dataset, num_iters=100):
        for group in groups_of(batch):
            identity = labels[group[0]]
            seen_identities.add(identity)
            members = indices_of[identity]
            cams_of_identity = {camids[i] for i in members}
            anchor_cam = camids[group[0]]
            other_cam_images = sum(camids[i] != anchor_cam for i in members)
            if len(members) >= K:
                assert len(set(group)) == K  # no repeats while there are enough images
                # Distinct cameras: as many as the identity can offer, up to K.
                assert len({camids[i] for i in group}) == min(K, len(cams_of_identity))
                # Anchor-camera images only once the other cameras are exhausted.
                same_cam_chosen = sum(camids[i] == anchor_cam for i in group[1:])
                assert same_cam_chosen == max(0, K - 1 - other_cam_images)
            else:
                assert set(group) == set(members)  # every image, then repeats
    assert seen_identities == set(range(12))


def test_identities_are_visited_evenly_within_an_epoch(dataset):
    labels, _ = dataset
    visits = Counter()
    for batch in make_sampler(dataset, num_iters=61):
        visits.update({labels[i] for i in batch})
    assert set(visits) == set(range(12))
    assert max(visits.values()) - min(visits.values()) <= 1
    assert sum(visits.values()) == 61 * P


def test_same_seed_and_epoch_reproduce_and_other_epochs_or_seeds_differ(dataset):
    sampler = make_sampler(dataset)
    first = list(sampler)
    assert list(sampler) == first  # iterating again replays the epoch
    assert list(make_sampler(dataset)) == first
    sampler.set_epoch(1)
    epoch_one = list(sampler)
    assert epoch_one != first
    other = make_sampler(dataset)
    other.set_epoch(1)
    assert list(other) == epoch_one
    assert list(make_sampler(dataset, seed=1)) != first


def test_len_is_num_iters_and_works_as_dataloader_batch_sampler(dataset):
    labels, _ = dataset
    sampler = make_sampler(dataset, num_iters=7)
    assert len(sampler) == 7
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(labels)), batch_sampler=sampler
    )
    batches = [batch[0] for batch in loader]
    assert len(batches) == 7 and all(b.shape == (P * K,) for b in batches)
    assert all(bool((b >= 0).all()) for b in batches)


def test_too_few_identities_raises(dataset):
    with pytest.raises(ValueError, match="at least P = batch_size // num_instances = 4"):
        PKSampler([0, 0, 1, 1, 2, 2, -1, -1], [0, 1, 0, 1, 0, 1, 0, 1], batch_size=16)
    with pytest.raises(ValueError, match="got 0"):
        PKSampler([-1] * 8, [0] * 8, batch_size=16)


def test_invalid_arguments_raise(dataset):
    labels, camids = dataset
    with pytest.raises(ValueError, match="multiple of num_instances"):
        PKSampler(labels, camids, batch_size=18, num_instances=4)
    with pytest.raises(ValueError, match="equal length"):
        PKSampler(labels, camids[:-1])
    with pytest.raises(ValueError, match="num_iters"):
        PKSampler(labels, camids, batch_size=16, num_iters=0)


def test_rank_within_group_matches_loop():
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 4, size=30)
    expected = [int((groups[:i] == groups[i]).sum()) for i in range(len(groups))]
    np.testing.assert_array_equal(_rank_within_group(groups), expected)
