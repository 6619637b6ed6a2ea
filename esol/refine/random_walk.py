"""IRN's random walk: CAMs propagated over the affinities of a predicted boundary map.

a_ij = (1 - max boundary on the path from i to j) ** beta for pairs within the radius (1 on the
diagonal, 0 elsewhere); T = D^-1 A, row-stochastic; the scores s (boundary-damped: s * (1 - B))
become T^(2^n) s, n = ``exp_times``: each pixel takes the mean score at the ends of walks
started from it, which stay inside its region. IRN squares the dense N x N matrix n times
(2 x N^2 floats: 1.1 GB at VOC size, and n dense N^3 products); here the sparse T (about N x
pairs entries) is applied 2^n times to the K score vectors, the same product in another order,
which costs 2^n x nnz x K and no N x N buffer.
Everything runs on the stride-4 grid; the result is upsampled to the image, a background
score is padded in front and the argmax is the mask.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from esol.refine.affinity import PairOffsets, path_affinity

STRIDE = 4


def sparse_transition(boundary: torch.Tensor, pairs: PairOffsets, beta: float) -> torch.Tensor:
    """T = D^-1 A, N = h * w, of a boundary map (h, w) as a sparse CSR (N, N) matrix: A symmetric, diagonal 1."""
    h, w = boundary.shape
    n = h * w
    scaled = path_affinity(boundary.float(), pairs).clamp_(min=0).pow_(beta)  # (P, h, w)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=boundary.device), torch.arange(w, device=boundary.device), indexing="ij"
    )
    cells = torch.arange(n, device=boundary.device)
    rows, cols, values = [cells], [cells], [torch.ones(n, device=boundary.device)]
    for k, (dy, dx) in enumerate(pairs.offsets):
        inside = (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
        src = (ys * w + xs)[inside]
        dst = ((ys + dy) * w + xs + dx)[inside]
        pair_values = scaled[k][inside]
        rows += [src, dst]
        cols += [dst, src]
        values += [pair_values, pair_values]
    row, col, value = torch.cat(rows), torch.cat(cols), torch.cat(values)
    degree = torch.zeros(n, device=boundary.device).index_add_(0, row, value)
    matrix = torch.sparse_coo_tensor(
        torch.stack([row, col]), value / degree[row], (n, n), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():  # "CSR support is in beta": matrix @ dense is all the walk uses
        warnings.simplefilter("ignore", UserWarning)
        return matrix.to_sparse_csr()


def random_walk(
    scores: torch.Tensor, boundary: torch.Tensor, pairs: PairOffsets, beta: float, exp_times: int
) -> torch.Tensor:
    """Propagate score maps (K, h, w) over a boundary map (h, w): T^(2^exp_times) (s * (1 - B))."""
    k, h, w = scores.shape
    transition = sparse_transition(boundary, pairs, beta)
    walked = (scores.float() * (1.0 - boundary.float())).reshape(k, h * w).T.contiguous()  # (N, K)
    for _ in range(2**exp_times):
        walked = transition @ walked
    return walked.T.reshape(k, h, w)


def grid_size(height: int, width: int, stride: int = STRIDE) -> tuple[int, int]:
    """The stride grid of an image: ceil(H / stride) x ceil(W / stride) cells."""
    return -(-height // stride), -(-width // stride)


def to_grid(cams: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Image-size CAMs (K, H, W) averaged over each stride x stride cell (edge cells: replicated)."""
    h, w = grid_size(*cams.shape[-2:], stride)
    padded = F.pad(cams[None], (0, w * stride - cams.shape[-1], 0, h * stride - cams.shape[-2]), mode="replicate")
    return F.avg_pool2d(padded, stride)[0]


def walk_to_mask(
    walked: torch.Tensor, keys: np.ndarray, size: tuple[int, int], bg_threshold: float, stride: int = STRIDE
) -> np.ndarray:
    """Walked scores (K, h, w) -> (H, W) uint8 mask: upsampled by the stride, cropped to the
    image, divided by their maximum, background ``bg_threshold`` in front, argmax, class ids."""
    height, width = size
    if len(keys) == 0:
        return np.zeros(size, dtype=np.uint8)
    up = F.interpolate(walked[None], scale_factor=stride, mode="bilinear", align_corners=False)[0, :, :height, :width]
    up = up / up.max().clamp(min=1e-5)
    up = F.pad(up, (0, 0, 0, 0, 1, 0), value=bg_threshold)
    classes = np.concatenate([[0], keys]).astype(np.uint8)
    return classes[up.argmax(dim=0).cpu().numpy()]
