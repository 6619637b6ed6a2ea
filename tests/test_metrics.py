import numpy as np
import pytest

from esol.evaluation.metrics import confusion, scores


def test_confusion_ignores_255_and_counts_by_class():
    gt = np.array([[0, 1, 1], [2, 255, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 0], [2, 1, 1]], dtype=np.uint8)
    conf = confusion(gt, pred, 3)
    # rows = ground truth, columns = prediction; the 255 pixel (predicted 1) is not counted
    assert conf.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert conf.sum() == 5


def test_scores_hand_computed():
    gt = np.array([[0, 1, 1], [2, 255, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 0], [2, 1, 1]], dtype=np.uint8)
    s = scores(confusion(gt, pred, 3), ["bg", "a", "b"])
    # IoU bg = 1/(1+1) ; a = 1/(1+1+1) ; b = 1/(1+0+1)
    assert s["per_class"] == {"bg": 50.0, "a": pytest.approx(33.333, abs=1e-3), "b": 50.0}
    assert s["miou"] == pytest.approx((50 + 100 / 3 + 50) / 3, abs=1e-3)
    # foreground TP = 2; predicted foreground = 3 (a:2, b:1); ground-truth foreground = 4
    assert s["precision"] == pytest.approx(200 / 3, abs=1e-3)
    assert s["recall"] == pytest.approx(50.0)


def test_absent_classes_do_not_count_in_miou():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2] = 1
    s = scores(confusion(gt, gt.copy(), 5))
    assert s["miou"] == 100.0
    assert s["per_class"]["3"] is None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8), 2)


def reference_confusion(gt, pred, k):
    conf = np.zeros((k, k), dtype=np.int64)
    for g, p in zip(gt.reshape(-1).tolist(), pred.reshape(-1).tolist(), strict=True):
        if g != 255:
            conf[g, p] += 1
    return conf


@pytest.mark.parametrize("k", [2, 7, 21, 81])
@pytest.mark.parametrize("pred_dtype", [np.uint8, np.int64])
def test_confusion_matches_a_pixel_loop(k, pred_dtype):
    rng = np.random.default_rng(k)
    gt = rng.integers(0, k, size=(37, 23)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.integers(0, k, size=gt.shape).astype(pred_dtype)
    assert (confusion(gt, pred, k) == reference_confusion(gt, pred, k)).all()
    assert (confusion(gt.astype(np.int64), pred, k) == reference_confusion(gt, pred, k)).all()


def test_class_ids_out_of_range_are_an_error():
    gt = np.array([[0, 1], [255, 1]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"prediction holds class id\(s\) \[3\]"):
        confusion(gt, np.array([[0, 3], [0, 1]], dtype=np.uint8), 3)
    with pytest.raises(ValueError, match=r"ground truth holds class id\(s\) \[7\]"):
        confusion(np.array([[0, 7], [255, 1]], dtype=np.uint8), np.zeros((2, 2), np.uint8), 3)
