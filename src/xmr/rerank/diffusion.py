"""Diffusion (random walk with restart) and the bi-directional random walk closed forms.

Diffusion: f = (I - alpha S)^-1 y, the fixed point of f <- alpha S f + (1 - alpha) y up to the
constant (1 - alpha), solved with conjugate gradient (I - alpha S is symmetric positive definite
for a symmetrically normalised S and 0 < alpha < 1).

Bi-directional walk (heterogeneous-manifolds paper, Eqs. 6-8): with L = I - alpha S,
scores of Y-queries over gallery X are the columns of L_xx^-1 S_xy (m, n); scores of X-queries
over gallery Y are the columns of L_yy^-1 S_yx (n, m); the fused score matrix is
B = lambda L_xx^-1 S_xy + (1 - lambda) (L_yy^-1 S_yx)^T, shape (m, n).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from xmr.errors import XmrError


def check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise XmrError(f"alpha must be in (0, 1), got {alpha}")


def diffuse(s: sp.spmatrix, y: np.ndarray, *, alpha: float = 0.99, tol: float = 1e-6,
            maxiter: int = 100) -> np.ndarray:
    """Solve (I - alpha S) f = y for each column of ``y`` with conjugate gradient.

    Args:
        s: symmetric normalised affinity. Shape: (n, n).
        y: initial state(s). Shape: (n,) or (n, q).
        alpha: restart parameter in (0, 1); larger walks further.
        tol: relative residual at which CG stops.
        maxiter: CG iterations per column.

    Returns:
        f with the shape of ``y``.
    """
    check_alpha(alpha)
    s = sp.csr_matrix(s, dtype=np.float64)
    n = s.shape[0]
    if s.shape != (n, n):
        raise XmrError(f"S must be square, got {s.shape}")
    y = np.asarray(y, dtype=np.float64)
    if y.shape[0] != n or y.ndim not in (1, 2):
        raise XmrError(f"y must have shape ({n},) or ({n}, q), got {y.shape}")
    lap = (sp.identity(n, format="csr") - alpha * s).tocsr()
    cols = y[:, None] if y.ndim == 1 else y
    out = np.empty_like(cols)
    for j in range(cols.shape[1]):
        if not cols[:, j].any():
            out[:, j] = 0.0
            continue
        sol, info = cg(lap, cols[:, j], rtol=tol, maxiter=maxiter)
        if info < 0:
            raise XmrError(f"conjugate gradient failed on column {j} (illegal input)")
        out[:, j] = sol
    return out[:, 0] if y.ndim == 1 else out


def random_walk_scores(s_gallery: sp.spmatrix, s_cross: sp.spmatrix, *, alpha: float = 0.99,
                       tol: float = 1e-6, maxiter: int = 100) -> np.ndarray:
    """L^-1 S_cross (Eq. 7): column j scores every gallery item for query j of the other set.

    Args:
        s_gallery: normalised gallery-side graph S_xx. Shape: (m, m).
        s_cross: row-normalised cross block S_xy (gallery rows, query columns). Shape: (m, n).

    Returns:
        Dense scores. Shape: (m, n).
    """
    s_cross = sp.csr_matrix(s_cross, dtype=np.float64)
    if s_cross.shape[0] != s_gallery.shape[0]:
        raise XmrError(f"S_cross has {s_cross.shape[0]} rows but the gallery graph has {s_gallery.shape[0]} nodes")
    return diffuse(s_gallery, s_cross.toarray(), alpha=alpha, tol=tol, maxiter=maxiter)


def bidirectional_scores(s_xx: sp.spmatrix, s_xy: sp.spmatrix, s_yy: sp.spmatrix, s_yx: sp.spmatrix, *,
                         alpha: float = 0.99, lam: float = 0.5, tol: float = 1e-6,
                         maxiter: int = 100) -> np.ndarray:
    """B = lam L_xx^-1 S_xy + (1 - lam) (L_yy^-1 S_yx)^T (Eq. 8). Shape: (m, n).

    Entry (i, j) scores gallery item x_i for query y_j (read it transposed for X-queries).
    """
    if not 0.0 <= lam <= 1.0:
        raise XmrError(f"lambda must be in [0, 1], got {lam}")
    m, n = s_xx.shape[0], s_yy.shape[0]
    if s_xy.shape != (m, n) or s_yx.shape != (n, m):
        raise XmrError(f"S_xy must be ({m}, {n}) and S_yx ({n}, {m}); got {s_xy.shape} and {s_yx.shape}")
    out = np.zeros((m, n))
    if lam > 0:
        out += lam * random_walk_scores(s_xx, s_xy, alpha=alpha, tol=tol, maxiter=maxiter)
    if lam < 1:
        out += (1.0 - lam) * random_walk_scores(s_yy, s_yx, alpha=alpha, tol=tol, maxiter=maxiter).T
    return out
