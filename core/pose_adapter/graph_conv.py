"""Dynamic kNN graph convolution over feature-map positions (ViG / DGCNN EdgeConv), memory-bounded.

Every position of a ``(B, C, h, w)`` map is a node (N = h·w). The graph is rebuilt at every call from
the features themselves: each node's k nearest neighbours by cosine similarity (self included, as in
GRPose's L2-normalised kNN). EdgeConv then gives node i

    x'_i = max_{j ∈ kNN(i)} ReLU(W · [x_i, x_j − x_i] + b)

Two facts keep this cheap and exact:

- **Chunked kNN.** The N × N similarity (4096² at a 64×64 latent, per sample) is never held whole:
  query rows go in chunks of ``chunk`` rows, each giving a ``(B, chunk, N)`` block reduced at once to
  its top-k indices. Peak memory is O(B · chunk · N) instead of O(B · N²).
- **Split linear layer.** With W = [W_a | W_b], W·[x_i, x_j − x_i] = (W_a − W_b)·x_i + W_b·x_j, and ReLU
  is monotone, so the max over neighbours is ReLU(a_i + max_j c_j) with a = (W_a − W_b)·x + b and
  c = W_b·x, both ``(B, C_out, N)``. The ``(B, 2C, N, k)`` edge tensor of the textbook form is never
  built; the max's arg (a neighbour per output channel) is found without autograd, chunk by chunk, and
  one differentiable ``gather`` gives the same value and gradient as the max.

Shape:
    - features: ``(B, C, N)`` (or ``(B, C, h, w)`` for :class:`GraphBlock`)
    - neighbour indices: ``(B, N, k)`` int64
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["knn_indices", "edge_conv_max", "EdgeConv", "GraphBlock"]


def _check(x: torch.Tensor, k: int, chunk: int, fn: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must be (B, C, N), got {got}")
    if not 1 <= k <= x.shape[2]:
        raise ValueError(f"{fn}: k must be in [1, N = {x.shape[2]}], got {k}; the feature map is smaller than k")
    if chunk < 1:
        raise ValueError(f"{fn}: chunk must be >= 1, got {chunk}")


@torch.no_grad()
def knn_indices(x: torch.Tensor, k: int = 9, *, chunk: int = 1024) -> torch.Tensor:
    """The k nearest neighbours of every node by cosine similarity (self included), chunked over queries.

    Args:
        x: ``(B, C, N)`` node features, any float dtype.
        k: neighbours per node, 1 <= k <= N.
        chunk: query rows per step; peak extra memory is about B·chunk·N similarity values.

    Returns:
        ``(B, N, k)`` int64 node indices, most similar first.

    Example:
        >>> x = torch.tensor([[[1.0, 1.0, -1.0, -1.0], [0.0, 0.1, 0.0, 0.1]]])  # 4 nodes, 2 channels
        >>> knn_indices(x, 2, chunk=3)[0, :, 1].tolist()   # each node's nearest other node
        [1, 0, 3, 2]
    """
    _check(x, k, chunk, "knn_indices")
    b, _, n = x.shape
    xn = F.normalize(x, dim=1)
    queries = xn.transpose(1, 2)  # (B, N, C)
    if n <= chunk:  # one block: skip the bookkeeping (small maps are dominated by per-op overhead)
        return torch.bmm(queries, xn).topk(k, dim=-1).indices
    out = torch.empty(b, n, k, dtype=torch.int64, device=x.device)
    for start in range(0, n, chunk):
        sim = torch.bmm(queries[:, start:start + chunk], xn)  # (B, R, N)
        out[:, start:start + chunk] = sim.topk(k, dim=-1).indices
    return out


def edge_conv_max(a: torch.Tensor, c: torch.Tensor, neighbours: torch.Tensor, *, chunk: int = 1024) -> torch.Tensor:
    """``ReLU(a_i + max_{j ∈ neighbours(i)} c_j)`` per channel, with the gradient of the max.

    Args:
        a: ``(B, O, N)`` the centre term (W_a − W_b)·x + b.
        c: ``(B, O, N)`` the neighbour term W_b·x.
        neighbours: ``(B, N, k)`` int64 from :func:`knn_indices`.
        chunk: nodes per step of the (gradient-free) arg-max search; its buffer is B·chunk·k·O values.

    Returns:
        ``(B, O, N)``.
    """
    b, o, n = c.shape
    if a.shape != c.shape or neighbours.ndim != 3 or neighbours.shape[:2] != (b, n):
        raise ValueError(f"edge_conv_max: a and c must be (B, O, N) and neighbours (B, N, k), got {tuple(a.shape)}, "
                         f"{tuple(c.shape)} and {tuple(neighbours.shape)}")
    k = neighbours.shape[2]
    ct = c.transpose(1, 2)  # (B, N, O)
    flat = ct.reshape(b * n, o)
    offset = (torch.arange(b, device=c.device) * n).view(b, 1, 1)
    if not (torch.is_grad_enabled() and c.requires_grad):  # inference: the max itself, chunk by chunk
        if n <= chunk:
            return F.relu(a + flat[(neighbours + offset).reshape(-1)].view(b, n, k, o).amax(dim=2).transpose(1, 2))
        cmax = torch.empty(b, n, o, dtype=c.dtype, device=c.device)
        for start in range(0, n, chunk):
            idx = neighbours[:, start:start + chunk]  # (B, R, k)
            cmax[:, start:start + chunk] = flat[(idx + offset).reshape(-1)].view(b, idx.shape[1], k, o).amax(dim=2)
        return F.relu(a + cmax.transpose(1, 2))
    best = torch.empty(b, n, o, dtype=torch.int64, device=c.device)
    with torch.no_grad():
        for start in range(0, n, chunk):
            idx = neighbours[:, start:start + chunk]  # (B, R, k)
            cand = flat[(idx + offset).reshape(-1)].view(b, idx.shape[1], k, o)
            arg = cand.argmax(dim=2)  # (B, R, O): which of the k neighbours wins, per channel
            best[:, start:start + chunk] = idx.gather(2, arg)
    cmax = ct.gather(1, best).transpose(1, 2)  # (B, O, N), differentiable in c
    return F.relu(a + cmax)


class EdgeConv(nn.Module):
    """Dynamic-kNN EdgeConv: ``max_j ReLU(W·[x_i, x_j − x_i] + b)`` over each node's k nearest neighbours.

    The MLP is one 1×1 layer with ReLU (GRPose's / ViG's ``BasicConv``); ``linear.weight`` is
    ``(out, 2·in, 1)`` exactly as the textbook form, so weights are interchangeable with it.

    Shape:
        - x: ``(B, C_in, N)`` → ``(B, C_out, N)``
    """

    def __init__(self, in_channels: int, out_channels: int, *, k: int = 9, chunk: int = 1024):
        super().__init__()
        self.k, self.chunk = k, chunk
        self.linear = nn.Conv1d(2 * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(x, self.k, self.chunk, "EdgeConv")
        c_in = x.shape[1]
        w = self.linear.weight[:, :, 0]
        w_a, w_b = w[:, :c_in], w[:, c_in:]
        bias = torch.cat([self.linear.bias, torch.zeros_like(self.linear.bias)])
        a, c = F.conv1d(x, torch.cat([w_a - w_b, w_b])[..., None], bias).chunk(2, dim=1)  # one matmul for both
        return edge_conv_max(a, c, knn_indices(x, self.k, chunk=self.chunk), chunk=self.chunk)


class GraphBlock(nn.Module):
    """GRPose's GCN unit on a feature map: 1×1 conv + norm, dynamic-kNN EdgeConv, residual.

    ``x + EdgeConv(norm(conv1x1(x)))`` with the graph built on the normalised features. GroupNorm
    stands where GRPose has BatchNorm: sampling batches cond and uncond together and training batches
    are small, so batch statistics would couple samples (GroupNorm behaves the same in train and eval).

    Shape:
        - x: ``(B, C, h, w)`` → ``(B, C, h, w)``
    """

    def __init__(self, channels: int, *, groups: int = 32, k: int = 9, chunk: int = 1024, eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1)
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.edge = EdgeConv(channels, channels, k=k, chunk=chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(self.proj(x)).reshape(b, c, h * w)
        return x + self.edge(y).reshape(b, c, h, w)
