"""Inter-pixel pairs within a radius (IRN, Ahn et al. 2019): offsets, the path between the two
pixels of a pair, pair labels from IR labels, and pair affinities from a boundary map.

A pair is a source pixel p and its destination p + d for an offset d = (dy, dx) of the half
plane dy > 0 or (dy = 0, dx > 0) with |d| < radius: each unordered pair is counted once. All
maps here are on IRN's stride-4 grid; tensors are (..., P, h, w) with P the number of offsets,
indexed by the source pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from esol.infra.io import IGNORE_LABEL


@dataclass(frozen=True)
class PairOffsets:
    """The offsets of a radius and, per offset, the grid points on the segment from 0 to it."""

    radius: int
    offsets: tuple[tuple[int, int], ...]
    paths: tuple[tuple[tuple[int, int], ...], ...]

    def __len__(self) -> int:
        return len(self.offsets)

    def as_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The offsets as a (P, 2) float tensor of (dy, dx), in grid cells."""
        return torch.tensor(self.offsets, dtype=torch.float32, device=device)


def segment_path(dy: int, dx: int) -> tuple[tuple[int, int], ...]:
    """Grid points of the bounding box of 0 and (dy, dx) closer than one cell to the line through
    them: the pixels a boundary between the pair's ends must cross. Includes both ends."""
    length_sq = dy * dy + dx * dx
    points = []
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            if (dy * x - dx * y) ** 2 < length_sq:
                points.append((y, x))
    return tuple(points)


def pair_offsets(radius: int) -> PairOffsets:
    """Every half-plane offset shorter than ``radius`` cells (IRN: 10 for training, 5 for the walk)."""
    if radius < 2:
        raise ValueError(f"pair radius must be at least 2 cells, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [
        (dy, dx) for dy in range(1, radius) for dx in range(1 - radius, radius) if dy * dy + dx * dx < radius**2
    ]
    return PairOffsets(radius, tuple(offsets), tuple(segment_path(dy, dx) for dy, dx in offsets))


def _padded(x: torch.Tensor, margin: int, fill: float) -> torch.Tensor:
    """``x`` with ``margin`` cells of ``fill`` around its last two axes."""
    return F.pad(x, (margin, margin, margin, margin), value=fill)


def _window(padded: torch.Tensor, margin: int, dy: int, dx: int, size: tuple[int, int]) -> torch.Tensor:
    """The view of a padded map that reads, at each p of the original map, its value at p + (dy, dx)."""
    h, w = size
    return padded[..., margin + dy : margin + dy + h, margin + dx : margin + dx + w]


def shifted(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``x`` read at p + (dy, dx) for every p of its last two axes; ``fill`` outside the map."""
    margin = max(abs(dy), abs(dx))
    return _window(_padded(x, margin, fill), margin, dy, dx, x.shape[-2:])


def pair_destinations(x: torch.Tensor, pairs: PairOffsets, fill: float) -> torch.Tensor:
    """(..., h, w) -> (..., P, h, w): the value at each source pixel's destination, per offset."""
    padded = _padded(x, pairs.radius, fill)
    return torch.stack([_window(padded, pairs.radius, dy, dx, x.shape[-2:]) for dy, dx in pairs.offsets], dim=-3)


def downsample_labels(label: np.ndarray, stride: int = 4) -> np.ndarray:
    """An (H, W) label map on the stride grid of ceil(H/stride) x ceil(W/stride) cells: each
    cell takes the label at its centre (nearest neighbour, as IRN rescales its IR labels)."""
    h, w = label.shape
    rows = np.minimum(np.arange(-(-h // stride)) * stride + stride // 2, h - 1)
    cols = np.minimum(np.arange(-(-w // stride)) * stride + stride // 2, w - 1)
    return label[np.ix_(rows, cols)]


@dataclass
class PairLabels:
    """Per pair: both background, both the same foreground class, or different classes.
    Pairs with an uncertain (255) end or an end outside the map are in none of the three."""

    bg_pos: torch.Tensor  # (..., P, h, w) bool
    fg_pos: torch.Tensor
    neg: torch.Tensor


def affinity_labels(labels: torch.Tensor, pairs: PairOffsets) -> PairLabels:
    """Pair labels from an IR label map (..., h, w) of class ids (0 background, 255 uncertain)."""
    labels = labels.long()
    src = labels.unsqueeze(-3)
    dst = pair_destinations(labels, pairs, IGNORE_LABEL)
    valid = (src != IGNORE_LABEL) & (dst != IGNORE_LABEL)
    same = valid & (src == dst)
    return PairLabels(bg_pos=same & (src == 0), fg_pos=same & (src > 0), neg=valid & (src != dst))


def path_affinity(boundary: torch.Tensor, pairs: PairOffsets) -> torch.Tensor:
    """Affinity of each pair from a boundary probability map (..., h, w): 1 - the largest boundary
    value on the path between the two pixels. Beyond the map the boundary counts as 1, so a pair
    leaving the map has affinity 0."""
    size = boundary.shape[-2:]
    padded = _padded(boundary, pairs.radius, 1.0)
    affinities = []
    for path in pairs.paths:
        along = torch.stack([_window(padded, pairs.radius, y, x, size) for y, x in path], dim=0)
        affinities.append(1.0 - along.amax(dim=0))
    return torch.stack(affinities, dim=-3)
