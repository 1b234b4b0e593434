"""Person-search heads: the interface every head implements, and the NAE-style head (DESIGN.md §5).

A head turns the backbone's per-stream feature maps into losses (training), detections (inference) and
embeddings of given boxes (queries). It sees the backbone only through `TrunkOutput`, so an
AlignPS-style anchor-free head can implement `PersonSearchHead` without touching the model class.

`NAEHead` follows Norm-Aware Embedding (Chen et al., CVPR 2020) on torchvision's detection parts:
- RPN (`AnchorGenerator` + `RPNHead` + `RegionProposalNetwork`) on the det stream's stride-16 map;
- RoIAlign 14x14 of the proposals on the stride-16 maps of *both* streams, stacked on the batch axis
  (det first) and run through the backbone's last stage as the box head, so each half goes through its
  own task adapters;
- det half -> max-pooled -> box regression (class-agnostic person box, torchvision's 2-class layout so
  `fastrcnn_loss` applies unchanged);
- reid half -> `NormAwareEmbedding`: the embedding's norm (through BatchNorm1d(1)) is the person logit,
  its direction the identity. `fastrcnn_loss` gets logits ``[0, z]`` so its 2-way cross-entropy is
  exactly the BCE on ``z`` (softmax([0, z])[1] = sigmoid(z));
- with ``person_score="det"`` (ours) the logit ``z`` comes instead from BatchNorm1d + a linear classifier
  on the det half, and the embedding serves identity only. From-scratch backbones need it: OIM suppresses the
  component all people share, which is what the norm would have to carry, so the norm score stays at
  chance (measured on the nano recipe: docs/results.md, "Status of the CPU recipe");
- OIM loss on the foreground RoIs' embeddings.
Proposal matching, fg/bg sampling and the box coder are torchvision's `RoIHeads` machinery.

Inference (ours): boxes and scores come from the proposals as in NAE; the embedding of every kept box is
then recomputed *at the final box* with the same path `embed` uses for query boxes, so a detection's
embedding and the embedding of the same box given as a query agree (cosine ~ 1). The extra pass costs
one box-head run on the kept boxes of the reid stream only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import box_iou, roi_align
from torchvision.ops import boxes as box_ops

from fslora.models.config import PersonSearchConfig
from fslora.models.oim import UNLABELED, OIMLoss

STREAMS = ("det", "reid")


@dataclass
class TrunkOutput:
    """What the backbone hands a head.

    Attributes:
        features: stream ("det" / "reid") -> per-stage feature maps (NCHW) of the padded batch. In the
            single-stream baseline both names map to the same list.
        strides: stride of each map in ``features[stream]`` w.r.t. the padded input.
        shared: True when the two streams are one (no adapters): heads may then compute once.
        run_stage: ``run_stage(i, x, streams)`` continues the backbone with stage ``i`` on ``x``, the
            stack of one equal chunk per name in ``streams`` (chunk k goes through stream k's adapters).
    """

    features: dict[str, list[Tensor]]
    strides: list[int]
    shared: bool
    run_stage: Callable[[int, Tensor, tuple[str, ...]], Tensor]


@dataclass
class HeadDetections:
    """Detections of one image in the model's resized frame (the model maps them back to input pixels)."""

    boxes: Tensor
    scores: Tensor
    embeddings: Tensor


class PersonSearchHead(nn.Module, ABC):
    """Interface of a one-stage person-search head (NAE here; AlignPS / ROI-AlignPS can follow)."""

    loss_names: tuple[str, ...]
    """Keys of the loss dict ``forward`` returns (fixed, present even when a loss is zero)."""

    @abstractmethod
    def forward(
        self, trunk: TrunkOutput, images: ImageList, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Training losses. ``targets``: per image ``boxes`` (N, 4) resized-frame xyxy, ``pids`` (N,)."""

    @abstractmethod
    def detect(self, trunk: TrunkOutput, images: ImageList, score_thresh: float) -> list[HeadDetections]:
        """People in each image with score > ``score_thresh``, in the resized frame."""

    @abstractmethod
    def embed(self, trunk: TrunkOutput, boxes: Sequence[Tensor]) -> list[Tensor]:
        """Unit-norm embeddings (N_i, D) of the given resized-frame boxes of each image."""


class NormAwareEmbedding(nn.Module):
    """NAE embedding: linear+BN of two pooled feature levels, concatenated; norm -> person logit."""

    def __init__(self, in_channels: tuple[int, int], dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(c, half), nn.BatchNorm1d(half)) for c in in_channels
        )
        for proj in self.projections:
            nn.init.normal_(proj[0].weight, std=0.01)
            nn.init.zeros_(proj[0].bias)
        self.rescaler = nn.BatchNorm1d(1)

    def forward(self, pooled: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``pooled``: one (R, C_k) tensor per level -> (unit embeddings (R, dim), person logits (R,))."""
        x = torch.cat([proj(p) for proj, p in zip(self.projections, pooled, strict=True)], dim=1)
        norms = x.norm(dim=1, keepdim=True)
        embeddings = x / norms.clamp_min(1e-12)
        logits = self.rescaler(norms).squeeze(1)
        return embeddings, logits


class RoISampler(RoIHeads):
    """torchvision's proposal matcher, fg/bg sampler and box coder, plus a lower IoU bound for background.

    Only the training-sample selection of `RoIHeads` is used; the box head lives in `NAEHead`.
    """

    def __init__(
        self,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        bg_iou_low: float,
        batch_size_per_image: int,
        positive_fraction: float,
        bbox_reg_weights: tuple[float, float, float, float],
    ) -> None:
        super().__init__(
            box_roi_pool=None,
            box_head=None,
            box_predictor=None,
            fg_iou_thresh=fg_iou_thresh,
            bg_iou_thresh=bg_iou_thresh,
            batch_size_per_image=batch_size_per_image,
            positive_fraction=positive_fraction,
            bbox_reg_weights=bbox_reg_weights,
            score_thresh=0.0,
            nms_thresh=1.0,
            detections_per_img=1,
        )
        self.bg_iou_low = bg_iou_low

    def assign_targets_to_proposals(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's assignment; proposals farther than ``bg_iou_low`` from every person are ignored."""
        matched_idxs, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        if self.bg_iou_low > 0:
            for props, gt, lab in zip(proposals, gt_boxes, labels, strict=True):
                if gt.numel():
                    lab[box_iou(gt, props).max(dim=0).values < self.bg_iou_low] = -1
        return matched_idxs, labels


class NAEHead(PersonSearchHead):
    """NAE-style head on VMamba: RPN + RoIAlign + last backbone stage as box head + norm-aware embedding."""

    loss_names = ("loss_objectness", "loss_rpn_box_reg", "loss_box_reg", "loss_box_cls", "loss_oim")

    def __init__(self, config: PersonSearchConfig, in_channels: int, box_head_channels: int) -> None:
        """``in_channels``: channels of the stride-16 map; ``box_head_channels``: of the last stage."""
        super().__init__()
        rpn_cfg, roi_cfg = config.rpn, config.roi
        # RPN parameters
        anchors = AnchorGenerator(
            sizes=(tuple(rpn_cfg.anchor_sizes),), aspect_ratios=(tuple(rpn_cfg.aspect_ratios),)
        )
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(in_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=rpn_cfg.fg_iou_thresh,
            bg_iou_thresh=rpn_cfg.bg_iou_thresh,
            batch_size_per_image=rpn_cfg.batch_size_per_image,
            positive_fraction=rpn_cfg.positive_fraction,
            pre_nms_top_n={"training": rpn_cfg.pre_nms_top_n_train, "testing": rpn_cfg.pre_nms_top_n_test},
            post_nms_top_n={"training": rpn_cfg.post_nms_top_n_train, "testing": rpn_cfg.post_nms_top_n_test},
            nms_thresh=rpn_cfg.nms_thresh,
        )
        # RoI parameters
        self.sampler = RoISampler(
            roi_cfg.fg_iou_thresh,
            roi_cfg.bg_iou_thresh,
            roi_cfg.bg_iou_low,
            roi_cfg.batch_size_per_image,
            roi_cfg.positive_fraction,
            tuple(roi_cfg.bbox_reg_weights),
        )
        self.roi_size = roi_cfg.output_size
        self.sampling_ratio = roi_cfg.sampling_ratio
        self.nms_thresh = roi_cfg.nms_thresh
        self.detections_per_img = roi_cfg.detections_per_img
        self.box_head_chunk = roi_cfg.box_head_chunk
        # Box predictor (det stream): background + person deltas, torchvision's layout.
        self.box_predictor = nn.Linear(box_head_channels, 2 * 4)
        nn.init.normal_(self.box_predictor.weight, std=0.001)
        nn.init.zeros_(self.box_predictor.bias)
        # Person score from the det stream (person_score="det"); None = NAE's norm-aware score.
        # BatchNorm first: on raw pooled features plain SGD learns the score far more slowly (measured).
        self.person_classifier: nn.Sequential | None = None
        if config.person_score == "det":
            self.person_classifier = nn.Sequential(
                nn.BatchNorm1d(box_head_channels), nn.Linear(box_head_channels, 1)
            )
            nn.init.normal_(self.person_classifier[1].weight, std=0.01)
            nn.init.zeros_(self.person_classifier[1].bias)
        # Embedding + OIM (reid stream)
        self.embedding = NormAwareEmbedding((in_channels, box_head_channels), config.embedding_dim)
        self.oim = OIMLoss(
            config.embedding_dim,
            config.oim.num_ids,
            queue_size=config.oim.queue_size,
            momentum=config.oim.momentum,
            scalar=config.oim.scalar,
        )

    # -- shared building blocks ----------------------------------------------------------------------

    def _pooled_roi_features(
        self, trunk: TrunkOutput, boxes: Sequence[Tensor], streams: tuple[str, ...]
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """stream -> (max-pooled RoIAlign of the stride-16 map, max-pooled box-head output), one row per box.

        Streams are stacked on the batch axis (chunk k = stream k) and run through the last stage
        together, ``box_head_chunk`` RoIs per stream at a time on the CPU; with a shared trunk the single
        stream is computed once and returned under every requested name.
        """
        run = streams[:1] if trunk.shared else streams
        level = len(trunk.features[run[0]]) - 1
        rois = [
            roi_align(
                trunk.features[s][level],
                list(boxes),
                output_size=self.roi_size,
                spatial_scale=1.0 / trunk.strides[level],
                sampling_ratio=self.sampling_ratio,
                aligned=True,
            )
            for s in run
        ]
        n = rois[0].shape[0]
        if n == 0:
            empty = (
                rois[0].new_zeros(0, rois[0].shape[1]),
                rois[0].new_zeros(0, self.box_predictor.in_features),
            )
            return dict.fromkeys(streams, empty)
        chunk = self.box_head_chunk if self.box_head_chunk and rois[0].device.type == "cpu" else n
        outputs: list[list[Tensor]] = [[] for _ in run]
        for start in range(0, n, chunk):
            stacked = torch.cat([r[start : start + chunk] for r in rois])
            pooled = F.adaptive_max_pool2d(trunk.run_stage(level + 1, stacked, run), 1).flatten(1)
            for k, part in enumerate(pooled.tensor_split(len(run))):
                outputs[k].append(part)
        pooled_in = [F.adaptive_max_pool2d(r, 1).flatten(1) for r in rois]
        by_stream = {s: (pooled_in[k], torch.cat(outputs[k])) for k, s in enumerate(run)}
        return {s: by_stream[run[0]] if trunk.shared else by_stream[s] for s in streams}

    def _predict(self, trunk: TrunkOutput, boxes: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Box deltas (R, 8), unit embeddings (R, D) and person logits (R,) of the given boxes."""
        pooled = self._pooled_roi_features(trunk, boxes, STREAMS)
        box_regression = self.box_predictor(pooled["det"][1])
        embeddings, logits = self.embedding(pooled["reid"])
        if self.person_classifier is not None:
            logits = self.person_classifier(pooled["det"][1]).squeeze(1)
        return box_regression, embeddings, logits

    # -- PersonSearchHead ----------------------------------------------------------------------------

    def forward(
        self, trunk: TrunkOutput, images: ImageList, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        det_map = trunk.features["det"][-1]
        proposals, rpn_losses = self.rpn(images, {"0": det_map}, [{"boxes": t["boxes"]} for t in targets])
        roi_targets = [{"boxes": t["boxes"], "labels": torch.ones_like(t["pids"])} for t in targets]
        proposals, matched_idxs, labels, regression_targets = self.sampler.select_training_samples(
            proposals, roi_targets
        )
        box_regression, embeddings, logits = self._predict(trunk, proposals)
        person_logits = torch.stack([torch.zeros_like(logits), logits], dim=1)
        loss_box_cls, loss_box_reg = fastrcnn_loss(person_logits, box_regression, labels, regression_targets)
        pids = torch.cat(
            [
                t["pids"][m] if t["pids"].numel() else torch.full_like(m, UNLABELED)
                for t, m in zip(targets, matched_idxs, strict=True)
            ]
        )
        foreground = torch.cat(labels) > 0
        loss_oim = self.oim(embeddings[foreground], pids[foreground])
        return {
            **rpn_losses,
            "loss_box_reg": loss_box_reg,
            "loss_box_cls": loss_box_cls,
            "loss_oim": loss_oim,
        }

    @torch.no_grad()
    def detect(self, trunk: TrunkOutput, images: ImageList, score_thresh: float) -> list[HeadDetections]:
        det_map = trunk.features["det"][-1]
        proposals, _ = self.rpn(images, {"0": det_map})
        box_regression, _, logits = self._predict(trunk, proposals)
        boxes = self.sampler.box_coder.decode(box_regression.float(), proposals)[:, 1]
        scores = torch.sigmoid(logits.float())
        kept_boxes, kept_scores = [], []
        for b, s, size in zip(
            boxes.split([len(p) for p in proposals]),
            scores.split([len(p) for p in proposals]),
            images.image_sizes,
            strict=True,
        ):
            b = box_ops.clip_boxes_to_image(b, size)
            keep = torch.where(s > score_thresh)[0]
            b, s = b[keep], s[keep]
            keep = box_ops.remove_small_boxes(b, min_size=1e-2)
            b, s = b[keep], s[keep]
            keep = box_ops.nms(b, s, self.nms_thresh)[: self.detections_per_img]
            kept_boxes.append(b[keep].float())
            kept_scores.append(s[keep])
        embeddings = self.embed(trunk, kept_boxes)
        return [HeadDetections(*x) for x in zip(kept_boxes, kept_scores, embeddings, strict=True)]

    @torch.no_grad()
    def embed(self, trunk: TrunkOutput, boxes: Sequence[Tensor]) -> list[Tensor]:
        pooled = self._pooled_roi_features(trunk, boxes, ("reid",))
        if pooled["reid"][0].shape[0] == 0:
            dim = self.embedding.projections[0][0].out_features * 2
            return [b.new_zeros(0, dim) for b in boxes]
        embeddings, _ = self.embedding(pooled["reid"])
        return list(embeddings.float().split([len(b) for b in boxes]))
