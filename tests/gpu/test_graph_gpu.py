"""GPU backends of the mutual dictionary: the fused CuPy kernel and torch on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viewcoop_core.graph import TAU_PRESETS, dictionary_rows, graph_edges, mutual_dictionary

pytestmark = pytest.mark.gpu


@pytest.fixture
def cupy():
    return pytest.importorskip("cupy")


def random_labels(rng: np.random.Generator, n: int, n_clusters: int, outlier_frac: float):
    y = rng.integers(0, n_clusters, size=n)
    y[rng.random(n) < outlier_frac] = -1
    return y


def reference_rows(y_img: np.ndarray, y_txt: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Eq. 3 for the given rows, written independently of the library (-1 equals nothing)."""
    same_img = (y_img[rows, None] == y_img[None, :]) & (y_img[rows, None] != -1)
    same_txt = (y_txt[rows, None] == y_txt[None, :]) & (y_txt[rows, None] != -1)
    return same_img.astype(np.int64) + same_txt


@pytest.fixture
def labels():
    rng = np.random.default_rng(7)
    y_img = random_labels(rng, 3001, 40, 0.3)
    y_txt = random_labels(rng, 3001, 25, 0.3)
    y_img[:2] = y_txt[:2] = -1
    return y_img, y_txt


@pytest.mark.parametrize("max_tile_bytes", [1, 3001 * 7 + 5, 1 << 30])
def test_cupy_fused_kernel_equals_numpy(cupy, labels, max_tile_bytes):
    y_img, y_txt = labels
    dic = mutual_dictionary(
        cupy.asarray(y_img), cupy.asarray(y_txt), backend="cupy", max_tile_bytes=max_tile_bytes
    )
    assert isinstance(dic, cupy.ndarray) and dic.dtype == cupy.int8
    np.testing.assert_array_equal(dic.get(), mutual_dictionary(y_img, y_txt, backend="numpy"))


def test_cupy_accepts_numpy_and_cuda_torch_inputs(cupy, labels):
    y_img, y_txt = labels
    expected = mutual_dictionary(y_img, y_txt, backend="numpy")
    from_numpy = mutual_dictionary(y_img, y_txt, backend="cupy")
    from_torch = mutual_dictionary(
        torch.from_numpy(y_img).cuda(), torch.from_numpy(y_txt).cuda(), backend="cupy"
    )
    np.testing.assert_array_equal(from_numpy.get(), expected)
    np.testing.assert_array_equal(from_torch.get(), expected)


def test_auto_picks_cupy_on_a_gpu(cupy, labels):
    assert isinstance(mutual_dictionary(*labels, backend="auto"), cupy.ndarray)


def test_graph_edges_on_cupy(cupy, labels):
    y_img, y_txt = labels
    dic_gpu = mutual_dictionary(y_img, y_txt, backend="cupy")
    dic_cpu = mutual_dictionary(y_img, y_txt, backend="numpy")
    for tau in TAU_PRESETS.values():
        np.testing.assert_array_equal(graph_edges(dic_gpu, tau).get(), graph_edges(dic_cpu, tau))


@pytest.mark.parametrize("max_tile_bytes", [1, 1 << 30])
def test_torch_cuda_equals_cpu(labels, max_tile_bytes):
    y_img, y_txt = (torch.from_numpy(y) for y in labels)
    gpu = mutual_dictionary(
        y_img.cuda(), y_txt.cuda(), backend="torch", max_tile_bytes=max_tile_bytes
    )
    assert gpu.is_cuda and gpu.dtype == torch.int8
    torch.testing.assert_close(gpu.cpu(), mutual_dictionary(y_img, y_txt, backend="torch"))


def test_dictionary_rows_on_cuda(labels):
    y_img, y_txt = labels
    rows = np.arange(0, 3001, 97)
    got = dictionary_rows(torch.from_numpy(y_img).cuda(), torch.from_numpy(y_txt).cuda(), rows)
    assert got.is_cuda
    np.testing.assert_array_equal(got.cpu().numpy(), reference_rows(y_img, y_txt, rows))


@pytest.fixture
def large_labels():
    """N = 20,000 (a 400 MB Dic) and 64 sampled rows with their reference values."""
    rng = np.random.default_rng(11)
    n = 20_000
    y_img = random_labels(rng, n, 300, 0.2)
    y_txt = random_labels(rng, n, 200, 0.2)
    rows = np.sort(rng.choice(n, size=64, replace=False))
    return y_img, y_txt, rows, reference_rows(y_img, y_txt, rows)


def test_large_n_torch_cuda_sampled_rows(large_labels):
    y_img, y_txt, rows, expected = large_labels
    dic = mutual_dictionary(
        torch.from_numpy(y_img).cuda(), torch.from_numpy(y_txt).cuda(), backend="torch"
    )
    np.testing.assert_array_equal(dic[torch.from_numpy(rows).cuda()].cpu().numpy(), expected)


def test_large_n_cupy_sampled_rows(cupy, large_labels):
    y_img, y_txt, rows, expected = large_labels
    dic = mutual_dictionary(cupy.asarray(y_img), cupy.asarray(y_txt), backend="cupy")
    np.testing.assert_array_equal(dic[cupy.asarray(rows)].get(), expected)
