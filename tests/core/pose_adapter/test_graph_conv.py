"""Dynamic kNN EdgeConv: chunked kNN equals the dense one, the split form equals the textbook EdgeConv."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitruvian.core.pose_adapter.graph_conv import EdgeConv, GraphBlock, edge_conv_max, knn_indices


def _dense_knn(x, k):
    xn = F.normalize(x, dim=1)
    return (xn.transpose(1, 2) @ xn).topk(k, dim=-1).indices


def _textbook_edge_conv(conv, x, idx):
    """max_j ReLU(W [x_i, x_j - x_i] + b), building the (B, 2C, N, k) edge tensor."""
    b, c, n = x.shape
    k = idx.shape[-1]
    xt = x.transpose(1, 2)  # (B, N, C)
    x_j = torch.stack([xt[i][idx[i]] for i in range(b)])  # (B, N, k, C)
    x_i = xt[:, :, None, :].expand(b, n, k, c)
    edge = torch.cat([x_i, x_j - x_i], dim=-1).permute(0, 3, 1, 2)  # (B, 2C, N, k)
    out = F.relu(F.conv2d(edge, conv.linear.weight[..., None], conv.linear.bias))
    return out.amax(dim=-1)


def test_smoke():
    x = torch.randn(2, 8, 30)
    assert knn_indices(x, 9).shape == (2, 30, 9)
    assert EdgeConv(8, 16, k=9, chunk=7)(x).shape == (2, 16, 30)
    assert GraphBlock(8, groups=2, k=4, chunk=5)(torch.randn(2, 8, 5, 6)).shape == (2, 8, 5, 6)


def test_value_knn_self_first_and_neighbours():
    x = torch.tensor([[[1.0, 1.0, -1.0, -1.0], [0.0, 0.1, 0.0, 0.1]]])
    idx = knn_indices(x, 2)
    assert idx[0, :, 0].tolist() == [0, 1, 2, 3]  # each node is its own nearest (cosine 1)
    assert idx[0, :, 1].tolist() == [1, 0, 3, 2]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_value_chunked_knn_equals_dense(chunk):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 64)
    dense = _dense_knn(x, 9)
    chunked = knn_indices(x, 9, chunk=chunk)
    # Same neighbour *sets* (ties aside, order is topk's); with random features there are no ties.
    assert torch.equal(chunked.sort(-1).values, dense.sort(-1).values)


@pytest.mark.parametrize("chunk", [3, 100])
def test_value_split_edge_conv_equals_textbook(chunk):
    torch.manual_seed(0)
    conv = EdgeConv(6, 10, k=4, chunk=chunk)
    x = torch.randn(2, 6, 25, requires_grad=True)
    ours = conv(x)
    ref = _textbook_edge_conv(conv, x, knn_indices(x, 4))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-5)


def test_gradcheck_edge_conv_max():
    torch.manual_seed(0)
    a = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)
    c = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 6, (1, 6, 3))
    assert torch.autograd.gradcheck(lambda a, c: edge_conv_max(a, c, idx, chunk=4), (a, c))


def test_value_graph_block_is_residual_and_batch_independent():
    torch.manual_seed(0)
    block = GraphBlock(8, groups=2, k=3).eval()
    x = torch.randn(3, 8, 4, 4)
    torch.nn.init.zeros_(block.edge.linear.weight)
    torch.nn.init.zeros_(block.edge.linear.bias)
    assert torch.equal(block(x), x)  # ReLU(0) = 0: only the skip remains
    torch.nn.init.normal_(block.edge.linear.weight)
    one_by_one = torch.cat([block(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(block(x), one_by_one)  # GroupNorm: no batch coupling


def test_exception():
    with pytest.raises(ValueError, match=r"knn_indices: x must be \(B, C, N\), got \(2, 3\)"):
        knn_indices(torch.zeros(2, 3), 2)
    with pytest.raises(ValueError, match=r"k must be in \[1, N = 4\], got 9"):
        knn_indices(torch.zeros(1, 2, 4), 9)
    with pytest.raises(ValueError, match="chunk must be >= 1, got 0"):
        knn_indices(torch.zeros(1, 2, 4), 2, chunk=0)


def test_value_inference_path_equals_training_path():
    """Without autograd the max is taken directly; with it, through the arg-max gather: same values."""
    torch.manual_seed(0)
    conv = EdgeConv(6, 10, k=5, chunk=4)
    x = torch.randn(2, 6, 30)
    with torch.no_grad():
        fast = conv(x)
    slow = conv(x.requires_grad_(True))
    assert slow.requires_grad and torch.equal(fast, slow.detach())
