"""Distances between Task2Vec embeddings, per pair and vectorized (pdist / cdist).

A Task2Vec embedding is a non-negative vector: the diagonal of a Fisher information matrix reduced to
one value per filter. Three distances are registered in :data:`DISTANCES`:

``task2vec_cosine`` -- Task2Vec's normalized cosine, exactly as awslabs' ``task_similarity.cosine``
with its ``_normalize``::

    s = a + b + 1e-8              (elementwise; the epsilon is ABSOLUTE)
    u = a / s,  v = b / s
    d(a, b) = 1 - <u, v> / (|u| |v|)

Because the epsilon is absolute while Fisher entries are typically ~1e-10, the value depends on the
embeddings' scale: multiplying both embeddings by c > 0 changes the distance. This is the distance of
the paper and of the official code; use it to reproduce their numbers.

``task2vec_cosine_scalefree`` -- the same normalized cosine after rescaling each *pair* so that
mean(a + b) = 1. With c = 1 / (mean(a) + mean(b)) this is algebraically the same as a relative
epsilon::

    s = a + b + 1e-8 * (mean(a) + mean(b))

and it is scale invariant: d(c a, c b) = d(a, b) for every c > 0.

``cosine`` -- the plain cosine distance 1 - <a, b> / (|a| |b|), scale invariant, no normalisation.

All three lie in [0, 1] for non-negative inputs (plain cosine accepts negative entries and then lies
in [0, 2]; rounding is clipped to the range). An all-zero embedding has no direction, so it is
rejected with an error instead of producing NaN.

Vectorized evaluation. The per-pair normalisation means ``task2vec_cosine`` is not an inner product
of fixed per-row features, so it cannot be a single matrix product. With ``s = a + b + eps`` and
``r = 1 / s`` we have ``u = a r``, ``v = b r`` and

    <u, v> = sum(a b / s^2),  |u|^2 = sum(a^2 / s^2),  |v|^2 = sum(b^2 / s^2),

which :func:`pdist` / :func:`cdist` compute for a tile of rows x columns x features at once as
broadcast [bi, bj, dc] arrays, accumulating the three sums over feature chunks. Tile sizes keep the
temporaries under ``chunk_bytes`` (so 1,000 x 135,000 inputs run in bounded memory; inputs are cast
to float64 one tile at a time, never as a whole copy). On the CPU the tiles are further capped to a
cache-sized working set, which measured fastest: numpy on one thread beat torch on two on the
project machines (about 2.3 ns per pair and feature: ~2.5 s for 200 x 51,601 float32 embeddings).
Passing ``device`` ("cuda", "cuda:1", or "cpu") copies the input there once, in its own dtype, and
runs the same tiles with torch, as large as ``chunk_bytes`` allows. Inputs may be numpy arrays or
torch tensors (tensors are validated on the host). ``pdist`` computes only the upper
triangle of blocks, then mirrors, so its result is exactly symmetric with an exact zero diagonal.
``cosine`` is an inner-product distance and is computed from a float64 Gram matrix accumulated over
feature chunks.

:func:`pairwise_loop` is the plain double loop over pairs with :func:`distance`; tests and
benchmarks check the vectorized path against it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

if TYPE_CHECKING:  # torch is only needed for the optional device path
    import torch

logger = logging.getLogger(__name__)

TASK2VEC_EPS = 1e-8
"""Task2Vec's absolute epsilon in h0 / (h0 + h1 + 1e-8)."""

DEFAULT_CHUNK_BYTES = 256 * 2**20
"""Default ceiling on the bytes of temporaries that one tile of pdist / cdist may allocate."""

# Memory of one task2vec tile in units of bi * bj * dc float64 elements: two broadcast temporaries
# (1/s, reused for v; and u) plus the float64 row slices (2 bi + bj) * dc, which is at most 3 more units.
_LIVE_TEMPS = 5
# CPU tiles: at most this many elements per temporary (2 MiB float64, about one core's L2), arranged
# as 8 x 8 pairs by 4,096 features when d is that large: the fastest shape measured on the project machines.
_CPU_TILE_ELEMENTS = 1 << 18
_CPU_FEATURE_TARGET = 4096

ArrayLike = Any  # numpy array, torch tensor, or nested sequence of numbers


# --------------------------------------------------------------------------------------------------
# per-pair distances
# --------------------------------------------------------------------------------------------------


def _pair_vectors(a: ArrayLike, b: ArrayLike, *, nonnegative: bool) -> tuple[np.ndarray, np.ndarray]:
    a64 = np.asarray(_to_numpy(a), dtype=np.float64)
    b64 = np.asarray(_to_numpy(b), dtype=np.float64)
    for name, x in (("a", a64), ("b", b64)):
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf")
        if nonnegative and (x < 0).any():
            raise ValueError(f"{name} has negative entries; Task2Vec embeddings are non-negative")
        if not x.any():
            raise ValueError(f"{name} is all zeros: the cosine distance is undefined")
    if a64.shape != b64.shape:
        raise ValueError(f"a and b differ in dimension: {a64.shape[0]} vs {b64.shape[0]}")
    return a64, b64


def _cosine_of(u: np.ndarray, v: np.ndarray) -> float:
    value = 1.0 - float(u @ v) / math.sqrt(float(u @ u) * float(v @ v))
    return min(max(value, 0.0), 2.0)


def task2vec_cosine(a: ArrayLike, b: ArrayLike) -> float:
    """Task2Vec's normalized cosine with the absolute epsilon 1e-8 (scale dependent), in float64."""
    a64, b64 = _pair_vectors(a, b, nonnegative=True)
    s = a64 + b64 + TASK2VEC_EPS
    return _cosine_of(a64 / s, b64 / s)


def task2vec_cosine_scalefree(a: ArrayLike, b: ArrayLike) -> float:
    """Task2Vec's normalized cosine after rescaling the pair to mean(a + b) = 1 (scale invariant)."""
    a64, b64 = _pair_vectors(a, b, nonnegative=True)
    s = a64 + b64 + TASK2VEC_EPS * (a64.mean() + b64.mean())
    return _cosine_of(a64 / s, b64 / s)


def cosine(a: ArrayLike, b: ArrayLike) -> float:
    """Plain cosine distance 1 - <a, b> / (|a| |b|) (scale invariant)."""
    a64, b64 = _pair_vectors(a, b, nonnegative=False)
    return _cosine_of(a64, b64)


@dataclass(frozen=True)
class Distance:
    """A registered distance: its per-pair function and the properties callers rely on."""

    name: str
    pair: Callable[[ArrayLike, ArrayLike], float]
    requires_nonnegative: bool
    scale_invariant: bool
    description: str


DISTANCES: Mapping[str, Distance] = MappingProxyType(
    {
        "task2vec_cosine": Distance(
            "task2vec_cosine", task2vec_cosine, True, False,
            "Task2Vec normalized cosine, absolute eps 1e-8 (the paper's distance)",
        ),
        "task2vec_cosine_scalefree": Distance(
            "task2vec_cosine_scalefree", task2vec_cosine_scalefree, True, True,
            "Task2Vec normalized cosine with each pair rescaled to mean(a + b) = 1",
        ),
        "cosine": Distance("cosine", cosine, False, True, "plain cosine distance"),
    }
)


def get_distance(name: str) -> Distance:
    """The registered distance called ``name``; a ValueError lists the known names otherwise."""
    try:
        return DISTANCES[name]
    except KeyError:
        raise ValueError(f"unknown distance {name!r}; known distances: {', '.join(sorted(DISTANCES))}") from None


def distance(a: ArrayLike, b: ArrayLike, metric: str = "task2vec_cosine") -> float:
    """Distance between two embeddings with the registered ``metric``."""
    return get_distance(metric).pair(a, b)


def pairwise_loop(E: ArrayLike, metric: str = "task2vec_cosine", *, other: ArrayLike | None = None) -> np.ndarray:
    """Reference: a Python double loop of :func:`distance`.

    Without ``other``: the symmetric [n, n] matrix over rows of E (upper triangle computed, mirrored,
    zero diagonal). With ``other``: the [n, m] matrix between rows of E and rows of ``other``.
    """
    rows = _check_matrix(E, "E", get_distance(metric).requires_nonnegative)
    if other is not None:
        cols = _check_matrix(other, "other", get_distance(metric).requires_nonnegative, dim=rows.shape[1])
        return np.array([[distance(a, b, metric) for b in cols] for a in rows], dtype=np.float64).reshape(
            rows.shape[0], cols.shape[0]
        )
    n = rows.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = distance(rows[i], rows[j], metric)
    return out


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        t = x.detach().cpu()
        return (t.float() if t.dtype.is_floating_point and t.element_size() < 4 else t).numpy()
    return np.asarray(x)


def _rows_named(mask: np.ndarray) -> str:
    bad = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in bad[:10])
    return f"row {shown}" if bad.size == 1 else f"rows {shown}{', ...' if bad.size > 10 else ''} ({bad.size} rows)"


def _check_matrix(E: ArrayLike, name: str, nonnegative: bool, *, dim: int | None = None) -> np.ndarray:
    """E as a 2-D real numpy array in its own dtype (not copied when already one)."""
    arr = _to_numpy(E)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_embeddings, dim], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, expected {dim} like the other input")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name} {_rows_named(~finite)} contain NaN or Inf")
    if nonnegative:
        negative = (arr < 0).any(axis=1)
        if negative.any():
            raise ValueError(
                f"{name} {_rows_named(negative)} have negative entries; Task2Vec embeddings are non-negative"
            )
    zero = ~arr.any(axis=1)
    if zero.any():
        raise ValueError(f"{name} {_rows_named(zero)} are all zeros: the cosine distance is undefined")
    return arr


# --------------------------------------------------------------------------------------------------
# vectorized kernels
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    rows: int  # bi: rows of A per tile
    cols: int  # bj: rows of B per tile
    features: int  # dc: features per tile


def _plan_tiles(na: int, nb: int, d: int, chunk_bytes: int, *, on_cpu: bool) -> _Plan:
    budget = max(1, chunk_bytes // (8 * _LIVE_TEMPS))  # float64 elements per [bi, bj, dc] temporary
    if on_cpu:
        budget = min(budget, _CPU_TILE_ELEMENTS)
        block = math.isqrt(budget // min(d, _CPU_FEATURE_TARGET))
    else:
        block = math.isqrt(budget // d)  # whole feature rows per tile when they fit
    pairs = max(1, block) ** 2
    bi = min(na, max(1, block))
    bj = min(nb, max(1, pairs // bi))
    bi = min(na, max(1, pairs // bj))
    dc = max(1, min(d, budget // (bi * bj)))
    return _Plan(bi, bj, dc)


def _np_task2vec_tile(A: np.ndarray, B: np.ndarray, eps: float | np.ndarray) -> tuple[np.ndarray, ...]:
    """<u, v>, |u|^2, |v|^2 for all pairs of a tile. A [bi, dc], B [bj, dc] float64; eps scalar or [bi, bj]."""
    if np.ndim(eps) == 0:
        r = (A + eps)[:, None, :] + B[None, :, :]  # s  [bi, bj, dc]
    else:
        r = A[:, None, :] + B[None, :, :]
        r += eps[:, :, None]
    np.reciprocal(r, out=r)  # 1 / s
    u = A[:, None, :] * r  # a / s
    np.multiply(r, B[None, :, :], out=r)  # v = b / s, in place
    bi, bj, dc = u.shape
    u_row, v_col = u.reshape(bi * bj, 1, dc), r.reshape(bi * bj, dc, 1)
    # batched 1 x dc @ dc x 1 products: row-wise dot products without another [bi, bj, dc] temporary
    dot = np.matmul(u_row, v_col).reshape(bi, bj)
    uu = np.matmul(u_row, u.reshape(bi * bj, dc, 1)).reshape(bi, bj)
    vv = np.matmul(r.reshape(bi * bj, 1, dc), v_col).reshape(bi, bj)
    return dot, uu, vv


def _torch_task2vec_tile(A: torch.Tensor, B: torch.Tensor, eps: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Same as :func:`_np_task2vec_tile` with torch tensors on any device."""
    if isinstance(eps, float):
        r = (A + eps)[:, None, :] + B[None, :, :]
    else:
        r = A[:, None, :] + B[None, :, :]
        r += eps[:, :, None]
    r.reciprocal_()
    u = A[:, None, :] * r
    r.mul_(B[None, :, :])
    bi, bj, dc = u.shape
    u_row, v_col = u.reshape(bi * bj, 1, dc), r.reshape(bi * bj, dc, 1)
    dot = (u_row @ v_col).reshape(bi, bj)
    uu = (u_row @ u.reshape(bi * bj, dc, 1)).reshape(bi, bj)
    vv = (r.reshape(bi * bj, 1, dc) @ v_col).reshape(bi, bj)
    return dot, uu, vv


class _Backend:
    """numpy on the host by default; torch on ``device`` when one is given."""

    def __init__(self, device: str | torch.device | None):
        self.device = device
        if device is not None:
            import torch

            self.torch = torch
            self.on_cpu = torch.device(device).type == "cpu"
        else:
            self.on_cpu = True

    def put(self, arr: np.ndarray) -> Any:
        """Move a whole input (in its own dtype) to where tiles are computed."""
        return arr if self.device is None else self.torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)

    def f64(self, x: Any) -> Any:
        if self.device is None:
            return np.asarray(x, dtype=np.float64)
        return x.to(self.torch.float64)

    def zeros(self, shape: tuple[int, int]) -> Any:
        if self.device is None:
            return np.zeros(shape, dtype=np.float64)
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def task2vec_tile(self, A: Any, B: Any, eps: Any) -> tuple[Any, ...]:
        if self.device is None:
            return _np_task2vec_tile(A, B, eps)
        if not isinstance(eps, float):
            eps = self.torch.from_numpy(eps).to(self.device)
        return _torch_task2vec_tile(A, B, eps)

    def host(self, x: Any) -> np.ndarray:
        return x if self.device is None else x.cpu().numpy()


def _finish(dot: np.ndarray, uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - dot / np.sqrt(uu * vv), 0.0, 2.0)


def _task2vec_blocks(
    A: np.ndarray, B: np.ndarray, scalefree: bool, chunk_bytes: int, backend: _Backend, *, upper_only: bool
) -> np.ndarray:
    na, d = A.shape
    nb = B.shape[0]
    plan = _plan_tiles(na, nb, d, chunk_bytes, on_cpu=backend.on_cpu)
    if upper_only:  # square blocks so that block (i, j) with j >= i covers the upper triangle
        plan = _Plan(min(plan.rows, plan.cols), min(plan.rows, plan.cols), plan.features)
    logger.debug("task2vec tiles for %dx%dx%d: %s on %s", na, nb, d, plan, backend.device or "numpy")
    if scalefree:  # per-pair epsilon 1e-8 * (mean(a) + mean(b))
        mean_a = A.mean(axis=1, dtype=np.float64)
        mean_b = B.mean(axis=1, dtype=np.float64)
    dev_a = backend.put(A)
    dev_b = dev_a if B is A else backend.put(B)
    out = np.zeros((na, nb), dtype=np.float64)
    for i0 in range(0, na, plan.rows):
        i1 = min(na, i0 + plan.rows)
        for j0 in range(i0 if upper_only else 0, nb, plan.cols):
            j1 = min(nb, j0 + plan.cols)
            if scalefree:
                eps: float | np.ndarray = TASK2VEC_EPS * (mean_a[i0:i1, None] + mean_b[None, j0:j1])
            else:
                eps = TASK2VEC_EPS
            sums = [backend.zeros((i1 - i0, j1 - j0)) for _ in range(3)]
            for k0 in range(0, d, plan.features):
                k1 = min(d, k0 + plan.features)
                tile = backend.task2vec_tile(
                    backend.f64(dev_a[i0:i1, k0:k1]), backend.f64(dev_b[j0:j1, k0:k1]), eps
                )
                for acc, part in zip(sums, tile):
                    acc += part
            out[i0:i1, j0:j1] = _finish(*(backend.host(s) for s in sums))
    return out


def _cosine_blocks(A: np.ndarray, B: np.ndarray, chunk_bytes: int, backend: _Backend) -> np.ndarray:
    """Plain cosine from a float64 Gram matrix accumulated over feature chunks."""
    na, d = A.shape
    nb = B.shape[0]
    same = B is A
    per_feature = 8 * (na + (0 if same else nb)) * 2  # float64 copies of both chunks plus squares
    dc = max(1, min(d, chunk_bytes // per_feature))
    dev_a = backend.put(A)
    dev_b = dev_a if same else backend.put(B)
    gram = backend.zeros((na, nb))
    sq_a = backend.zeros((na, 1))
    sq_b = sq_a if same else backend.zeros((nb, 1))
    for k0 in range(0, d, dc):
        a = backend.f64(dev_a[:, k0 : k0 + dc])
        b = a if same else backend.f64(dev_b[:, k0 : k0 + dc])
        gram += a @ b.T
        sq_a += (a * a).sum(1)[:, None]
        if not same:
            sq_b += (b * b).sum(1)[:, None]
    gram, sq_a, sq_b = backend.host(gram), backend.host(sq_a), backend.host(sq_b)
    return np.clip(1.0 - gram / np.sqrt(sq_a * sq_b.T), 0.0, 2.0)


def _matrix_between(
    A: np.ndarray, B: np.ndarray, metric: str, chunk_bytes: int, device: Any, *, upper_only: bool
) -> np.ndarray:
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive integer, got {chunk_bytes!r}")
    backend = _Backend(device)
    if metric == "cosine":
        return _cosine_blocks(A, B, chunk_bytes, backend)
    return _task2vec_blocks(
        A, B, metric == "task2vec_cosine_scalefree", chunk_bytes, backend, upper_only=upper_only
    )


def pdist(
    E: ArrayLike,
    metric: str = "task2vec_cosine",
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """All pairwise distances between the rows of E [n, d] as a float64 [n, n] matrix.

    Exactly symmetric with an exact zero diagonal; only the upper triangle of blocks is computed.
    ``chunk_bytes`` caps the temporaries of one tile; ``device`` runs the tiles with torch there.
    """
    spec = get_distance(metric)
    arr = _check_matrix(E, "E", spec.requires_nonnegative)
    full = _matrix_between(arr, arr, spec.name, chunk_bytes, device, upper_only=True)
    upper = np.triu(full, 1)
    return upper + upper.T


def cdist(
    A: ArrayLike,
    B: ArrayLike,
    metric: str = "task2vec_cosine",
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Distances between every row of A [na, d] and every row of B [nb, d], as float64 [na, nb]."""
    spec = get_distance(metric)
    a = _check_matrix(A, "A", spec.requires_nonnegative)
    b = _check_matrix(B, "B", spec.requires_nonnegative, dim=a.shape[1])
    return _matrix_between(a, b, spec.name, chunk_bytes, device, upper_only=False)
