"""Protocol rules (query frame / camera exclusion, CUHK lists, det threshold) on a hand-made gallery."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fslora.data.records import ImageRecord, PersonBox, PersonSearchSplit, QueryRecord
from fslora.evaluation.protocols import (
    evaluate_cuhk_sysu,
    evaluate_posetrack21,
    evaluate_prw,
    evaluate_search,
    evaluate_split,
)

A = (0.0, 0.0, 50.0, 100.0)  # where people stand in every gallery frame
ELSEWHERE = (300.0, 0.0, 350.0, 100.0)


def emb(sim: float) -> list[float]:
    """A unit 2-d embedding whose dot product with the query embedding [1, 0] is `sim`."""
    return [sim, math.sqrt(1.0 - sim * sim)]


def gallery() -> tuple[list[ImageRecord], dict[str, dict[str, torch.Tensor]]]:
    """Five frames; the query identity (pid 1) stands at A in g0, g1 (camera 1) and g2 (camera 2).

    frame cam  person      detections (det score, similarity to the query)
    g0    1    pid 1 @ A   @A (.99, 1.0)                - the query's own frame
    g1    1    pid 1 @ A   @A (.98, .6)
    g2    2    pid 1 @ A   @A (.97, .8); @ELSEWHERE (.3, .99) - below det_thresh, must be dropped
    g3    2    pid 2 @ A   @A (.96, .9)                 - a different person, more similar
    g4    3    pid -1 @ ELSEWHERE   @A (.95, .1)        - unlabelled person missed by the detector
    """
    people = {
        "g0": (1, [PersonBox(A, 1)]),
        "g1": (1, [PersonBox(A, 1)]),
        "g2": (2, [PersonBox(A, 1)]),
        "g3": (2, [PersonBox(A, 2)]),
        "g4": (3, [PersonBox(ELSEWHERE, -1)]),
    }
    records = [ImageRecord(p, 400, 200, cam, tuple(persons)) for p, (cam, persons) in people.items()]
    dets = {
        "g0": [(A, 0.99, 1.0)],
        "g1": [(A, 0.98, 0.6)],
        "g2": [(A, 0.97, 0.8), (ELSEWHERE, 0.3, 0.99)],
        "g3": [(A, 0.96, 0.9)],
        "g4": [(A, 0.95, 0.1)],
    }
    detections = {
        path: {
            "boxes": torch.tensor([d[0] for d in items]),
            "scores": torch.tensor([d[1] for d in items]),
            "embeddings": torch.tensor([emb(d[2]) for d in items]),
        }
        for path, items in dets.items()
    }
    return records, detections


QUERY = QueryRecord("g0", A, 1, camera=1)
Q_EMB = torch.tensor([[1.0, 0.0]])


def test_prw_excludes_the_query_frame():
    records, detections = gallery()
    result = evaluate_prw(records, detections, [QUERY], Q_EMB)
    # g0 is left out. Ranked: g3 .9 FP, g2 .8 TP, g1 .6 TP, g4 .1 FP (g2's .99 det is below det_thresh).
    # 2 GTs -> AP = (1/2 + 2/3) / 2 = 7/12; top-1 misses, top-5 hits.
    assert result["mAP"] == pytest.approx(7 / 12)
    assert result["top1"] == 0.0
    assert result["top5"] == 1.0 and result["top10"] == 1.0
    assert result["num_queries"] == 1 and result["num_queries_without_gt"] == 0


def test_det_thresh_decides_which_detections_are_searched():
    records, detections = gallery()
    # With every detection kept, g2's .99 box (no GT there) ranks first:
    # .99 FP, .9 FP, .8 TP, .6 TP, .1 FP -> AP = (1/3 + 2/4) / 2 = 5/12.
    result = evaluate_prw(records, detections, [QUERY], Q_EMB, det_thresh=0.0)
    assert result["mAP"] == pytest.approx(5 / 12)


def test_prw_multi_view_excludes_the_query_camera():
    records, detections = gallery()
    result = evaluate_prw(records, detections, [QUERY], Q_EMB, multi_view=True)
    # Camera 1 (g0, g1) is left out. Ranked: .9 FP, .8 TP, .1 FP; 1 GT -> AP = 1/2.
    assert result["mAP"] == pytest.approx(0.5)
    assert result["top1"] == 0.0 and result["top5"] == 1.0


def test_posetrack21_follows_the_prw_rules():
    records, detections = gallery()
    same = evaluate_posetrack21(records, detections, [QUERY], Q_EMB)
    assert same == evaluate_prw(records, detections, [QUERY], Q_EMB)
    cross = evaluate_posetrack21(records, detections, [QUERY], Q_EMB, cross_video=True)
    assert cross["mAP"] == pytest.approx(0.5)


def test_detection_ap_and_recall_over_the_gallery():
    records, detections = gallery()
    result = evaluate_prw(records, detections, [QUERY], Q_EMB)
    # 5 GT people; kept detections by score: .99 TP, .98 TP, .97 TP, .96 TP, .95 FP (g4's person is at
    # ELSEWHERE) -> AP = 4 / 5, recall 4 / 5.
    assert result["det_ap"] == pytest.approx(0.8)
    assert result["det_recall"] == pytest.approx(0.8)


def test_cuhk_gallery_list_is_honoured():
    records, detections = gallery()
    # The query's list is g1 and g4 only: g2 / g3, though more similar, do not exist for it.
    # Ranked: g1 .6 TP, g4 .1 FP; 1 GT -> AP 1, top-1 hit.
    by_index = evaluate_cuhk_sysu(records, detections, [QUERY], Q_EMB, [[1, 4]])
    assert by_index["mAP"] == pytest.approx(1.0)
    assert by_index["top1"] == 1.0
    by_path = evaluate_cuhk_sysu(records, detections, [QUERY], Q_EMB, [["g1", "g4"]])
    assert by_path == by_index
    # A list holding g3 (more similar, another person) and g2 ranks the FP first: AP = 1/2.
    assert evaluate_cuhk_sysu(records, detections, [QUERY], Q_EMB, [[3, 2]])["mAP"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not among the records"):
        evaluate_cuhk_sysu(records, detections, [QUERY], Q_EMB, [["nowhere.jpg"]])
    with pytest.raises(ValueError, match="lists"):
        evaluate_cuhk_sysu(records, detections, [QUERY], Q_EMB, [[1], [2]])


def test_evaluate_split_dispatches_on_query_gallery():
    records, detections = gallery()
    listed = PersonSearchSplit("toy", [], [QUERY], records, query_gallery=[[1, 4]])
    whole = PersonSearchSplit("toy", [], [QUERY], records)
    assert evaluate_split(listed, detections, Q_EMB)["mAP"] == pytest.approx(1.0)
    assert evaluate_split(whole, detections, Q_EMB)["mAP"] == pytest.approx(7 / 12)
    assert evaluate_split(whole, detections, Q_EMB, exclude_camera=True)["mAP"] == pytest.approx(0.5)


def test_queries_without_gt_are_counted_not_scored():
    records, detections = gallery()
    # pid 2 appears only in g3; a query from g3 has no other occurrence -> unscorable.
    lone = QueryRecord("g3", A, 2, camera=2)
    result = evaluate_prw(records, detections, [QUERY, lone], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert result["num_queries"] == 1 and result["num_queries_without_gt"] == 1
    assert result["mAP"] == pytest.approx(7 / 12)


def test_detections_as_objects_or_aligned_sequence():
    records, detections = gallery()
    as_objects = [SimpleNamespace(**detections[r.image_path]) for r in records]
    expected = evaluate_search(records, detections, [QUERY], Q_EMB)
    assert evaluate_search(records, as_objects, [QUERY], Q_EMB) == expected
    numpy_dets = {p: {k: v.numpy() for k, v in d.items()} for p, d in detections.items()}
    assert evaluate_search(records, numpy_dets, [QUERY], np.array([[1.0, 0.0]])) == expected


def test_bad_inputs_name_the_problem():
    records, detections = gallery()
    partial = dict(detections)
    del partial["g2"]
    with pytest.raises(ValueError, match="'g2'"):
        evaluate_prw(records, partial, [QUERY], Q_EMB)
    with pytest.raises(ValueError, match="query_embeddings"):
        evaluate_prw(records, detections, [QUERY], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="query size 3"):
        evaluate_prw(records, detections, [QUERY], torch.zeros(1, 3))
    with pytest.raises(ValueError, match="empty"):
        evaluate_prw([], {}, [QUERY], Q_EMB)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "embeddings": torch.zeros(0, 2)}
    no_dets = evaluate_prw(records, dict.fromkeys(detections, empty), [QUERY], Q_EMB)
    assert no_dets["mAP"] == 0.0 and no_dets["det_recall"] == 0.0


def test_per_query_figures_are_recorded_for_scored_queries_only():
    records, detections = gallery()
    lone = QueryRecord("g3", A, 2, camera=2)  # unscorable: pid 2 is nowhere else
    second = QueryRecord("g1", A, 1, camera=1)
    per_query: list[dict] = []
    result = evaluate_prw(
        records,
        detections,
        [QUERY, lone, second],
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        per_query=per_query,
    )
    assert [(q["query"], q["image"], q["pid"]) for q in per_query] == [(0, "g0", 1), (2, "g1", 1)]
    assert per_query[0]["ap"] == pytest.approx(7 / 12) and per_query[0]["top1"] is False
    # From g1: g0 1.0 TP, g3 .9 FP, g2 .8 TP, g4 .1 FP -> AP = (1 + 2/3) / 2 = 5/6, top-1 hits.
    assert per_query[1]["ap"] == pytest.approx(5 / 6) and per_query[1]["top1"] is True
    assert result["mAP"] == pytest.approx(np.mean([q["ap"] for q in per_query]))
    assert result["top1"] == pytest.approx(np.mean([q["top1"] for q in per_query]))
