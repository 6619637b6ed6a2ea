"""IRN's random walk: CAMs propagated over the affinities of a predicted boundary map.

a_ij = (1 - max boundary on the path from i to j) ** beta for pairs within the radius (1 on the
diagonal, 0 elsewhere); T = D^-1 A, row-stochastic; T squared ``exp_times`` times (a walk of
2 ** exp_times steps); the scores s (boundary-damped: s * (1 - B)) become T^(2^n) s: each pixel
takes the mean score at the ends of walks started from it, which stay inside its region.
Everything runs on the stride-4 grid; the result is upsampled to the image, a background
score is padded in front and the argmax is the mask.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from esol.refine.affinity import PairOffsets, path_affinity

STRIDE = 4


def affinity_matrix(boundary: torch.Tensor, pairs: PairOffsets, beta: float) -> torch.Tensor:
    """Dense (N, N) affinities, N = h * w, of a boundary map (h, w): symmetric, diagonal 1."""
    h, w = boundary.shape
    n = h * w
    scaled = path_affinity(boundary.float(), pairs).clamp_(min=0).pow_(beta)  # (P, h, w)
    matrix = torch.zeros(n, n, dtype=torch.float32, device=boundary.device)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=boundary.device), torch.arange(w, device=boundary.device), indexing="ij"
    )
    for k, (dy, dx) in enumerate(pairs.offsets):
        inside = (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
        src = (ys * w + xs)[inside]
        dst = ((ys + dy) * w + xs + dx)[inside]
        values = scaled[k][inside]
        matrix[src, dst] = values
        matrix[dst, src] = values
    matrix.diagonal().fill_(1.0)
    return matrix


def transition_matrix(affinity: torch.Tensor) -> torch.Tensor:
    """Row-normalise (in place) an affinity matrix: T = D^-1 A, each row sums to 1."""
    return affinity.div_(affinity.sum(dim=1, keepdim=True))


def matrix_power_by_squaring(matrix: torch.Tensor, times: int) -> torch.Tensor:
    """``matrix`` ** (2 ** times), squaring in place between two buffers (peak: two N x N)."""
    spare = torch.empty_like(matrix)
    for _ in range(times):
        torch.matmul(matrix, matrix, out=spare)
        matrix, spare = spare, matrix
    return matrix


def random_walk(
    scores: torch.Tensor, boundary: torch.Tensor, pairs: PairOffsets, beta: float, exp_times: int
) -> torch.Tensor:
    """Propagate score maps (K, h, w) over a boundary map (h, w): T^(2^exp_times) (s * (1 - B))."""
    k, h, w = scores.shape
    transition = matrix_power_by_squaring(transition_matrix(affinity_matrix(boundary, pairs, beta)), exp_times)
    damped = (scores.float() * (1.0 - boundary.float())).reshape(k, h * w)
    return (damped @ transition.T).reshape(k, h, w)


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
