"""Where a seed map's errors lie, over the whole threshold sweep.

Three breakdowns, accumulated image by image and read at any threshold of the sweep:

* of the object pixels (any dataset): the share above the threshold with the right class (the
  recall), with a wrong class, and below it. A wrong class is a miss that no amount of coverage
  mends: where it dominates, a map cannot gain recall by spreading further;
* by distance to the nearest object (any dataset): the false-positive rate of ground-truth
  background pixels in distance bands (pixels, Euclidean; the 255 border band counts as
  object), and each band's share of all false positives. Errors within a feature stride of an
  object are the CAM's resolution, not context leakage;
* by region of the synthetic images (``Regions/``): recall of the class part and of the
  shared body (right class), false-positive rate on the class-context background and on
  other background: the two failures ESOL targets, incompleteness and context leakage.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy import ndimage

from esol.infra.io import IGNORE_LABEL

DISTANCE_BANDS = (0, 4, 8, 16, 32)  # band edges in pixels; the last band is open-ended
REGION_NAMES = ("background", "context_background", "object_body", "object_part")  # ids 0-3 of esol.data.synthetic
OBJECT_REGIONS = {"object_part": "part_recall", "object_body": "body_recall"}
BACKGROUND_REGIONS = {"context_background": "context_fp_rate", "background": "background_fp_rate"}


def band_names() -> list[str]:
    return [f"{a}-{b}px" for a, b in pairwise(DISTANCE_BANDS)] + [f"{DISTANCE_BANDS[-1]}px+"]


def fp_share_within(shares: dict[str, float], pixels: int) -> float:
    """Of the ``fp_share_by_distance`` of :meth:`SeedErrors.at`, the share within ``pixels`` of an
    object (``pixels`` one of the band edges)."""
    if pixels not in DISTANCE_BANDS[1:]:
        raise ValueError(f"{pixels} px is not a band edge of {DISTANCE_BANDS}")
    # zip stops before the open-ended last band, which is never within any edge.
    uppers = zip(band_names(), DISTANCE_BANDS[1:], strict=False)
    return round(sum(shares[name] for name, high in uppers if high <= pixels), 2)


class SeedErrors:
    """Counts, per category of pixels, how many exceed each threshold of the sweep."""

    def __init__(self, thresholds: list[float]) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.above: dict[str, np.ndarray] = {}
        self.total: dict[str, int] = {}

    def _add(self, name: str, values: np.ndarray, total: int) -> None:
        """``values``: the scores of the category's pixels that count when above the threshold."""
        ordered = np.sort(values.astype(np.float64, copy=False), axis=None)
        above = ordered.size - np.searchsorted(ordered, self.thresholds, side="right")
        self.above[name] = self.above.get(name, 0) + above
        self.total[name] = self.total.get(name, 0) + total

    def add(self, gt: np.ndarray, best: np.ndarray, peak: np.ndarray, regions: np.ndarray | None = None) -> None:
        """One image: ground truth, the top class per pixel, its score (thresholded later), and
        the synthetic region map when there is one."""
        valid = gt != IGNORE_LABEL
        objects = valid & (gt > 0)
        self._add("object:wrong_class", peak[objects & (best != gt)], int(objects.sum()))
        self._add("object:any_class", peak[objects], int(objects.sum()))
        background = gt == 0
        if background.all():  # no object: every pixel is in the open-ended band
            distance = np.full(gt.shape, np.inf)
        else:
            distance = ndimage.distance_transform_edt(background)  # >= 1 on background pixels
        for name, (low, high) in zip(band_names(), pairwise([*DISTANCE_BANDS, np.inf]), strict=True):
            band = background & (distance > low) & (distance <= high)
            self._add(f"band:{name}", peak[band], int(band.sum()))
        if regions is None:
            return
        for index, name in enumerate(REGION_NAMES):
            region = (regions == index) & valid
            if name in OBJECT_REGIONS:
                # Found = above the threshold with the right class.
                self._add(name, peak[region & (best == gt)], int(region.sum()))
            else:
                self._add(name, peak[region], int(region.sum()))

    def at(self, threshold: float) -> dict:
        """The breakdown at one threshold of the sweep (percent)."""
        i = int(np.argmin(np.abs(self.thresholds - threshold)))

        def rate(name: str) -> float:
            return round(100.0 * float(self.above[name][i]) / max(self.total[name], 1), 2)

        bands = band_names()
        false_positives = sum(float(self.above[f"band:{b}"][i]) for b in bands)
        out: dict = {
            "threshold": float(self.thresholds[i]),
            "fp_rate_by_distance": {b: rate(f"band:{b}") for b in bands},
            "fp_share_by_distance": {
                b: round(100.0 * float(self.above[f"band:{b}"][i]) / max(false_positives, 1.0), 2) for b in bands
            },
        }
        has_objects = self.total["object:any_class"] > 0
        out["wrong_class_rate"] = rate("object:wrong_class")  # object pixels above t, wrong class
        out["missed_rate"] = round(100.0 - rate("object:any_class"), 2) if has_objects else 0.0  # below t
        for region, key in {**OBJECT_REGIONS, **BACKGROUND_REGIONS}.items():
            if region in self.above:
                out[key] = rate(region)
        return out
