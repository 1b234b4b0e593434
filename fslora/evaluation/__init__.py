"""Person-search evaluation: ranking / detection metrics and the standard dataset protocols."""

from fslora.evaluation.metrics import (
    DetectionScores,
    Ranking,
    average_precision,
    box_iou_np,
    detection_ap_recall,
    rank_gallery,
    search_iou_threshold,
    top_k_hit,
)
from fslora.evaluation.protocols import (
    DEFAULT_TOPK,
    evaluate_cuhk_sysu,
    evaluate_posetrack21,
    evaluate_prw,
    evaluate_search,
    evaluate_split,
    listed_gallery_rule,
    whole_set_rule,
)

__all__ = [
    "DEFAULT_TOPK",
    "DetectionScores",
    "Ranking",
    "average_precision",
    "box_iou_np",
    "detection_ap_recall",
    "evaluate_cuhk_sysu",
    "evaluate_posetrack21",
    "evaluate_prw",
    "evaluate_search",
    "evaluate_split",
    "listed_gallery_rule",
    "rank_gallery",
    "search_iou_threshold",
    "top_k_hit",
    "whole_set_rule",
]
