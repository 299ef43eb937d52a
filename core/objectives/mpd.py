"""α-fair gradient combination (FairGrad; FairHuman's Minimum Potential Delay is α = 2), pure torch.

Given the per-task gradients G = [g_1 … g_K] (P × K) the update direction is d = Σ_i w_i g_i with
w ≥ 0 solving ``(GᵀG w)_i = w_i^(−1/α)``: the stationarity condition of maximising
Σ_i u_α(g_iᵀd) under ‖d‖ ≤ ε (u_2(x) = −1/x). No task whose gradient is non-zero is starved: a
task that the others already serve gets a small weight, a neglected one a large one.

The system is the optimality condition of the strictly convex problem

    min_{w > 0}  φ(w) = ½ wᵀ A w − Σ_i f(w_i),   f'(w) = w^(−1/α)

(f(w) = w^(1−1/α)/(1−1/α), or log w for α = 1), so :func:`fair_weights` runs damped Newton steps
on φ, which stay positive and converge in a handful of iterations, on the tensors' own device (no
scipy round trip, unlike the official ``least_squares`` call).

Shape:
    A: (K, K) symmetric positive semi-definite Gram matrix. w: (K,) > 0.
"""
from __future__ import annotations

import torch

__all__ = ["fair_weights", "gram", "fixed_point_residual"]


def gram(grads: torch.Tensor) -> torch.Tensor:
    """A = GᵀG in float64 for G given as (K, P) rows (one flattened gradient per task) → (K, K)."""
    if grads.ndim != 2:
        raise ValueError(f"gram: grads must be (K, P), got {tuple(grads.shape)}")
    g = grads.double()
    return g @ g.T


def fixed_point_residual(A: torch.Tensor, w: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """max_i |(A w)_i − w_i^(−1/α)| / w_i^(−1/α): 0 at the solution (a relative error)."""
    rhs = w.double().pow(-1.0 / alpha)
    return ((A.double() @ w.double() - rhs).abs() / rhs).max()


def fair_weights(A: torch.Tensor, alpha: float = 2.0, *, iters: int = 50, tol: float = 1e-10) -> torch.Tensor:
    """Solve (A w)_i = w_i^(−1/α), w > 0, for a (K, K) Gram matrix A → (K,) float64 weights.

    Args:
        A: (K, K) GᵀG; every diagonal entry must be > 0 (drop tasks whose gradient is zero first:
            their equation has no solution, the official solver drives that weight to infinity).
        alpha: α > 0 (2 = Minimum Potential Delay, FairHuman).
        iters: Newton iterations at most. tol: stop when the relative step is below it.

    Raises:
        ValueError: A is not square, or has a zero (or negative) diagonal entry.

    Example:
        >>> A = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> w = fair_weights(A)            # orthogonal tasks: w_i = A_ii^(−2/3)
        >>> torch.allclose(w, torch.tensor([4.0, 1.0], dtype=torch.float64).pow(-2 / 3))
        True
    """
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"fair_weights: A must be a non-empty (K, K) matrix, got {tuple(A.shape)}")
    if not alpha > 0:
        raise ValueError(f"fair_weights: alpha must be > 0, got {alpha}")
    A = A.double()
    A = 0.5 * (A + A.T)
    diag = torch.diagonal(A)
    if not bool((diag > 0).all()):
        raise ValueError(
            f"fair_weights: A must have a positive diagonal (every task a non-zero gradient), got diagonal "
            f"{diag.tolist()}; drop the zero-gradient tasks before solving"
        )
    # Diagonal rescaling w_i = c_i·v_i with c_i = A_ii^(−α/(α+1)) (the exact answer for orthogonal
    # tasks): the system becomes (M v)_i = M_ii·v_i^(−1/α) with M = C A C, whose solution is v ≈ 1
    # whatever the tasks' gradient scales (they can differ by 10⁶ between a face and the global loss).
    c = diag.pow(-alpha / (alpha + 1.0))
    M = c[:, None] * A * c[None, :]
    d = torch.diagonal(M).clone()
    # a tiny ridge keeps the Hessian positive definite when tasks are collinear (A singular)
    M = M + 1e-12 * torch.diag(d)
    p = 1.0 / alpha
    v = torch.ones_like(d)
    for _ in range(iters):
        grad = M @ v - d * v.pow(-p)
        hess = M + torch.diag(p * d * v.pow(-p - 1.0))
        step = torch.linalg.solve(hess, grad)
        # damped: no weight loses more than 90% of its value in one step (v stays > 0)
        ratio = (step / v).max()
        t = torch.where(ratio > 0.9, 0.9 / ratio, torch.ones_like(ratio))
        v = v - t * step
        if bool(((t * step).abs() <= tol * v).all()):
            break
    return c * v
