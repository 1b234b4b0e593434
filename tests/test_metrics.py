"""Search AP / top-k / detection metrics on hand-made cases whose answers are worked out in comments."""

import numpy as np
import pytest

from fslora.evaluation.metrics import (
    average_precision,
    box_iou_np,
    detection_ap_recall,
    rank_gallery,
    search_iou_threshold,
    top_k_hit,
)


def test_ap_relevant_at_ranks_1_and_3_with_one_gt_missed():
    # Ranking: TP (0.9), FP (0.8), TP (0.7); a third ground truth was never detected.
    # Precision at the TPs: 1/1 and 2/3 -> sum 5/3; divided by 3 ground truths -> 5/9.
    # (= AP over the list 5/6 times the recall ceiling 2/3.)
    assert average_precision([0.9, 0.8, 0.7], [1, 0, 1], num_positives=3) == pytest.approx(5 / 9)
    # Without the missed ground truth: (1 + 2/3) / 2 = 5/6.
    assert average_precision([0.9, 0.8, 0.7], [1, 0, 1]) == pytest.approx(5 / 6)


def test_ap_sorts_by_score_not_input_order():
    # Same ranking as above, shuffled: scores decide, so still 5/9.
    assert average_precision([0.7, 0.9, 0.8], [1, 1, 0], num_positives=3) == pytest.approx(5 / 9)


def test_ap_perfect_and_worst_rankings():
    assert average_precision([3, 2, 1], [1, 1, 0]) == pytest.approx(1.0)
    # Positives last of 4: precision 1/3 and 2/4 -> (1/3 + 1/2) / 2 = 5/12.
    assert average_precision([4, 3, 2, 1], [0, 0, 1, 1]) == pytest.approx(5 / 12)


def test_ap_ties_share_one_threshold():
    # Two items tied at 0.5, one relevant: precision read after the whole tie = 1/2, in either order.
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert average_precision([0.5, 0.5], [0, 1]) == pytest.approx(0.5)


def test_ap_without_positives_is_zero_and_bad_inputs_raise():
    assert average_precision([0.9, 0.1], [0, 0], num_positives=2) == 0.0
    assert average_precision([], [], num_positives=0) == 0.0
    with pytest.raises(ValueError, match="num_positives"):
        average_precision([0.9, 0.1], [1, 1], num_positives=1)
    with pytest.raises(ValueError, match="differ in length"):
        average_precision([0.9], [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([float("nan")], [1])


def test_top_k():
    scores, labels = [0.6, 0.9, 0.7, 0.8], [0, 0, 1, 0]  # ranked: 0.9, 0.8, 0.7 (TP), 0.6
    assert not top_k_hit(scores, labels, 1)
    assert not top_k_hit(scores, labels, 2)
    assert top_k_hit(scores, labels, 3)
    assert top_k_hit(scores, labels, 10)
    assert not top_k_hit(scores, [0, 0, 0, 0], 10)
    with pytest.raises(ValueError, match="k must be"):
        top_k_hit(scores, labels, 0)


def test_box_iou_matches_hand_values():
    # Two 10x10 squares offset by 5 in x: intersection 50, union 150 -> 1/3.
    iou = box_iou_np([[0, 0, 10, 10]], [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[1 / 3, 1.0, 0.0]])
    assert box_iou_np(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou_np([[0, 0, 1]], [[0, 0, 1, 1]])


def test_small_box_iou_rule():
    # 100x200: 20000 / (110*210) = 0.866 -> capped at 0.5.
    assert search_iou_threshold([0, 0, 100, 200]) == pytest.approx(0.5)
    # 20x40: 800 / (30*50) = 0.533 -> 0.5.
    assert search_iou_threshold([5, 5, 25, 45]) == pytest.approx(0.5)
    # 10x20: 200 / (20*30) = 1/3.
    assert search_iou_threshold([0, 0, 10, 20]) == pytest.approx(1 / 3)
    assert search_iou_threshold([0, 0, 10, 20], small_box_rule=False) == pytest.approx(0.5)


def test_rank_gallery_small_box_rule_decides_a_match():
    # GT 10x20 needs IoU 1/3; the detection (0,0,10,8) has IoU 80/200 = 0.4 -> a match only with the rule.
    args = ([0.9], [[0, 0, 10, 8]], [7], {7: [0, 0, 10, 20]})
    assert rank_gallery(*args).labels.tolist() == [True]
    assert rank_gallery(*args, small_box_rule=False).labels.tolist() == [False]


def test_rank_gallery_hand_case():
    # Gallery images 0, 1, 2; the query person is in image 0 (box A) and image 2 (box B).
    # image 0: d0 on A (sim .9), d1 also on A (sim .4) -> only the more similar d0 is the TP.
    # image 1: d2 (sim .8), no GT.   image 2: d3 far from B (sim .7) -> B is missed.
    sims = [0.9, 0.4, 0.8, 0.7]
    boxes = [[0, 0, 50, 100], [2, 2, 50, 100], [0, 0, 50, 100], [200, 0, 250, 100]]
    images = [0, 0, 1, 2]
    gt = {0: [0, 0, 50, 100], 2: [0, 0, 50, 100]}
    ranking = rank_gallery(sims, boxes, images, gt)
    assert ranking.labels.tolist() == [True, False, False, False]
    assert (ranking.num_gt, ranking.num_found) == (2, 1)
    # Ranked: d0 TP, d2, d3, d1 -> precision 1 at the only TP; 2 GTs -> AP = 1/2.
    assert ranking.ap == pytest.approx(0.5)
    assert ranking.top_k(1)
    # A GT in an image without detections still counts: 3 GTs -> 1/3.
    gt[5] = [0, 0, 50, 100]
    assert rank_gallery(sims, boxes, images, gt).ap == pytest.approx(1 / 3)


def test_rank_gallery_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        rank_gallery([0.1, 0.2], [[0, 0, 1, 1]], [0], {})


def test_detection_ap_recall_hand_case():
    # image A: GTs g1 (0,0,10,10) and g2 (20,0,30,10);
    #   det .9 on g1 -> TP; det .8 at (1,0,11,10) overlaps only g1, already taken -> FP.
    # image B: GT g3 (0,0,10,10); det .95 far away -> FP; det .7 on g3 -> TP.
    # image C: no GT; det .6 -> FP.
    # Ranked: .95 FP, .9 TP, .8 FP, .7 TP, .6 FP -> precision 1/2 and 2/4 at the TPs;
    # 3 GTs -> AP = (1/2 + 1/2) / 3 = 1/3; recall = 2/3.
    gts = [[[0, 0, 10, 10], [20, 0, 30, 10]], [[0, 0, 10, 10]], np.zeros((0, 4))]
    dets = [[[0, 0, 10, 10], [1, 0, 11, 10]], [[50, 50, 60, 60], [0, 0, 10, 10]], [[0, 0, 5, 5]]]
    scores = [[0.9, 0.8], [0.95, 0.7], [0.6]]
    result = detection_ap_recall(gts, dets, scores)
    assert result.ap == pytest.approx(1 / 3)
    assert result.recall == pytest.approx(2 / 3)
    assert (result.num_gt, result.num_tp) == (3, 2)


def test_detection_matching_is_greedy_by_score():
    # One GT; the higher-scored det (IoU 0.9) claims it before the better-overlapping det (IoU 1.0),
    # which becomes a FP. Ranked TP, FP -> AP = 1, recall 1. Matching by IoU would give AP 1/2.
    result = detection_ap_recall([[[0, 0, 10, 10]]], [[[0, 0, 10, 9], [0, 0, 10, 10]]], [[0.9, 0.8]])
    assert result.ap == pytest.approx(1.0)
    assert result.recall == pytest.approx(1.0)


def test_detection_iou_threshold_and_errors():
    # IoU of (0,0,10,10) with (5,0,15,10) is 1/3: a miss at 0.5, a hit at 0.3.
    gts, dets, scores = [[[0, 0, 10, 10]]], [[[5, 0, 15, 10]]], [[0.9]]
    assert detection_ap_recall(gts, dets, scores).recall == 0.0
    assert detection_ap_recall(gts, dets, scores, iou_threshold=0.3).recall == 1.0
    with pytest.raises(ValueError, match="same images"):
        detection_ap_recall(gts, dets, [])
    with pytest.raises(ValueError, match=r"det_scores\[0\]"):
        detection_ap_recall(gts, dets, [[0.9, 0.1]])


def reference_ap(scores, labels, total):
    """Textbook AP over a fully sorted list; a tie group is one threshold (scikit-learn's rule)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    s = [scores[i] for i in order]
    lab = [labels[i] for i in order]
    ap = 0.0
    for i, hit in enumerate(lab):
        if hit:
            end = max(j for j in range(len(s)) if s[j] == s[i])  # last item of the tie group
            ap += sum(lab[: end + 1]) / (end + 1)
    return ap / total if total else 0.0


def test_ap_and_top_k_agree_with_a_sorted_reference_on_random_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        scores = rng.integers(0, 4, n).astype(float).tolist()  # many ties
        labels = (rng.random(n) < 0.4).tolist()
        total = sum(labels) + int(rng.integers(0, 3))
        assert average_precision(scores, labels, total) == pytest.approx(reference_ap(scores, labels, total))
        order = np.argsort(-np.array(scores), kind="stable")
        for k in (1, 2, 5):
            assert top_k_hit(scores, labels, k) == any(labels[i] for i in order[:k])
