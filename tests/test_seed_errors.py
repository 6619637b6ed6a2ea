"""Where seed errors lie: counts by distance to objects and by synthetic region, at any threshold."""

import numpy as np
import pytest

from esol.evaluation.seed_errors import SeedErrors, band_names, fp_share_within


def scene():
    """A 1x40 strip: object of class 2 on pixels 0-9 (part 0-3, body 4-9), background beyond."""
    gt = np.zeros((1, 40), np.uint8)
    gt[0, :10] = 2
    regions = np.zeros((1, 40), np.uint8)
    regions[0, :4] = 3  # part
    regions[0, 4:10] = 2  # body
    regions[0, 20:] = 1  # class context
    best = np.full((1, 40), 2, np.int64)
    best[0, 8:10] = 1  # the body's last two pixels get the wrong class
    peak = np.zeros((1, 40), np.float32)
    peak[0, :4] = 0.9
    peak[0, 4:10] = 0.5
    peak[0, 10:14] = 0.5  # spill right next to the object: distances 1-4
    peak[0, 30] = 0.5  # one context pixel 21 px away
    return gt, best, peak, regions


def test_breakdown_counts_each_category_at_each_threshold():
    errors = SeedErrors([0.3, 0.7])
    errors.add(*scene())
    low = errors.at(0.3)
    assert low["part_recall"] == 100.0
    assert low["body_recall"] == pytest.approx(100 * 4 / 6, abs=0.01)  # wrong-class pixels are not found
    assert low["context_fp_rate"] == pytest.approx(100 * 1 / 20, abs=0.01)
    assert low["background_fp_rate"] == pytest.approx(100 * 4 / 10, abs=0.01)
    names = band_names()
    assert low["fp_rate_by_distance"][names[0]] == 100.0  # pixels 10-13, all within 4 px
    assert low["fp_share_by_distance"][names[0]] == pytest.approx(80.0)
    assert low["fp_share_by_distance"]["16-32px"] == pytest.approx(20.0)
    assert sum(low["fp_share_by_distance"].values()) == pytest.approx(100.0)
    high = errors.at(0.7)
    assert high["body_recall"] == 0.0 and high["part_recall"] == 100.0
    assert high["context_fp_rate"] == 0.0 and sum(high["fp_share_by_distance"].values()) == 0.0


def test_without_regions_only_the_distance_breakdown_is_reported():
    gt, best, peak, _ = scene()
    errors = SeedErrors([0.3])
    errors.add(gt, best, peak)
    out = errors.at(0.3)
    assert "body_recall" not in out and "context_fp_rate" not in out
    assert out["fp_rate_by_distance"][band_names()[0]] == 100.0


def test_image_without_objects_puts_every_false_positive_in_the_far_band():
    errors = SeedErrors([0.3])
    gt = np.zeros((4, 4), np.uint8)
    errors.add(gt, gt.astype(np.int64), np.full((4, 4), 0.5, np.float32))
    assert errors.at(0.3)["fp_share_by_distance"][band_names()[-1]] == 100.0


def test_ignored_border_pixels_are_not_scored_in_regions_but_count_as_object_for_distance():
    gt, best, peak, regions = scene()
    gt[0, 10] = 255  # border band right of the object
    errors = SeedErrors([0.3])
    errors.add(gt, best, peak, regions)
    out = errors.at(0.3)
    assert out["background_fp_rate"] == pytest.approx(100 * 3 / 9, abs=0.01)  # pixel 10 left out
    assert out["fp_share_by_distance"][band_names()[0]] == pytest.approx(75.0)


def test_share_within_sums_the_bands_up_to_an_edge():
    shares = dict(zip(band_names(), [50.0, 30.0, 15.0, 5.0, 0.0], strict=True))
    assert fp_share_within(shares, 4) == 50.0
    assert fp_share_within(shares, 8) == 80.0
    assert fp_share_within(shares, 32) == 100.0
    with pytest.raises(ValueError, match="band edge"):
        fp_share_within(shares, 10)


def test_object_pixels_split_into_found_wrong_class_and_missed():
    gt, best, peak, _ = scene()
    peak[0, 6:8] = 0.2  # two body pixels of the right class fall below 0.3
    errors = SeedErrors([0.3, 0.7])
    errors.add(gt, best, peak)  # no regions: the split is reported on any dataset
    low = errors.at(0.3)
    assert low["wrong_class_rate"] == pytest.approx(100 * 2 / 10)  # pixels 8-9
    assert low["missed_rate"] == pytest.approx(100 * 2 / 10)  # pixels 6-7
    high = errors.at(0.7)
    assert high["wrong_class_rate"] == 0.0 and high["missed_rate"] == pytest.approx(60.0)  # only the part is above


def test_object_split_ignores_border_pixels_and_images_without_objects():
    errors = SeedErrors([0.3])
    gt = np.zeros((4, 4), np.uint8)
    errors.add(gt, gt.astype(np.int64), np.zeros((4, 4), np.float32))
    assert errors.at(0.3)["missed_rate"] == 0.0
    gt[0, :2] = 255
    gt[1, :2] = 1
    errors.add(gt, gt.astype(np.int64), np.full((4, 4), 0.5, np.float32))
    out = errors.at(0.3)
    assert out["missed_rate"] == 0.0 and out["wrong_class_rate"] == 0.0
