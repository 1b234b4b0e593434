"""`FSLoRAPersonSearch`: the one-stage person-search model (a backbone trunk + FSLoRA dual streams + a head).

The backbone is any `fslora.backbones.Backbone` family (VMamba, the paper's; MobileNetV2 with ImageNet
weights, the fast CPU one), chosen by ``config.backbone``; adapters and streams are put on it here.

Pipeline (DESIGN.md §5; stages 0-indexed here, the spec's "stages 1-3" are 0-2):
images -> `ImageTransform` (resize, ImageNet normalisation, pad) -> backbone stages 0-2 as two task streams
(det, reid) sharing every frozen weight -> head (`NAEHead`: RPN on det, RoIAlign on both, stage 3 as box
head, box regression on det, norm-aware embedding + OIM on reid) -> boxes mapped back to input pixels.

``use_adapters=False`` is the paper's NAE baseline: no adapters, the whole backbone is trained, and a
single stream serves both tasks (computed once).

Devices: the model runs where its parameters are. On CUDA the backbone runs under bf16 autocast
(``autocast_bf16``); the head always works in float32 and outputs are float32. ``torch.compile`` is
optional (``model.backbone.compile()``); nothing requires it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops

from fslora.adapters import capture_routing as _capture_routing
from fslora.adapters import count_parameters, forward_streams, inject_backbone, run_stage
from fslora.backbones.registry import build_backbone
from fslora.models.config import PersonSearchConfig
from fslora.models.detections import Detections, Routing
from fslora.models.heads import STREAMS, NAEHead, PersonSearchHead, TrunkOutput
from fslora.models.transform import Batch, ImageInput, ImageTransform, as_boxes

TRUNK_STAGES = (0, 1, 2)
"""Backbone stages run on the whole image; stage 3 is the box head."""


def build_head(config: PersonSearchConfig, channels: Sequence[int]) -> PersonSearchHead:
    """The head named by ``config.head`` for a trunk with per-stage ``channels``."""
    if config.head == "nae":
        return NAEHead(config, in_channels=channels[TRUNK_STAGES[-1]], box_head_channels=channels[-1])
    raise ValueError(f"unknown head {config.head!r}")


class FSLoRAPersonSearch(nn.Module):
    """One-stage person search: ``model(images, targets)`` -> losses, ``detect`` / ``embed_boxes`` -> results.

    Images everywhere are lists of uint8 RGB numpy arrays (H, W, 3) or float tensors (3, H, W) in [0, 1],
    any size; boxes are ``x1, y1, x2, y2`` in those images' pixels.
    """

    def __init__(self, config: PersonSearchConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PersonSearchConfig()
        t = config.transform
        self.transform = ImageTransform(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible)
        self.backbone = build_backbone(config.backbone)
        if config.use_adapters:
            inject_backbone(self.backbone, config.adapters)
        self.head = build_head(config, self.backbone.out_channels)

    # -- properties ---------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def parameter_counts(self) -> dict[str, float]:
        """``fslora.count_parameters`` of the whole model (total, trainable, adapter, adapter_fraction)."""
        return count_parameters(self)

    # -- training -----------------------------------------------------------------------------------

    def forward(self, images: Sequence[ImageInput], targets: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Training losses (model in train mode).

        Args:
            images: the batch (see class docstring).
            targets: one dict per image: ``boxes`` (N, 4) xyxy input pixels, ``pids`` (N,) int with -1 for
                unlabelled people (they count as persons for detection and feed the OIM queue).

        Returns:
            ``{"loss_objectness", "loss_rpn_box_reg", "loss_box_reg", "loss_box_cls", "loss_oim"}``,
            unweighted scalars (weighting belongs to the trainer).
        """
        if not self.training:
            raise ValueError("forward() computes training losses: call model.train() first (detect() infers)")
        if targets is None:
            raise ValueError("targets: forward() needs one target dict per image; use detect() for inference")
        batch = self.transform(images, targets, device=self.device)
        trunk = self._trunk(batch.images.tensors, STREAMS)
        return self.head(trunk, batch.images, batch.targets)

    # -- inference ----------------------------------------------------------------------------------

    @torch.no_grad()
    def detect(
        self, images: Sequence[ImageInput], score_thresh: float = 0.5, capture_routing: bool = False
    ) -> list[Detections]:
        """Find the people in each image (eval mode is used for the call and the mode restored after).

        Returns one `Detections` per image on the CPU: boxes in input pixels, scores, unit-norm
        embeddings, and with ``capture_routing`` the adapters' routing over the whole image
        (expert masks per det / reid task and frequency weights, at every adapted trunk layer).
        """
        if not 0.0 <= score_thresh <= 1.0:
            raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
        if capture_routing and not self.config.use_adapters:
            raise ValueError("capture_routing=True needs adapters (this model has use_adapters=False)")
        with _eval_mode(self):
            batch = self.transform(images, device=self.device)
            if capture_routing:
                with _capture_routing(self.backbone, to_cpu=True) as recorder:
                    trunk = self._trunk(batch.images.tensors, STREAMS)
            else:
                trunk = self._trunk(batch.images.tensors, STREAMS)
            found = self.head.detect(trunk, batch.images, score_thresh)
        results = []
        for i, det in enumerate(found):
            boxes = box_ops.clip_boxes_to_image(
                batch.to_input_pixels(det.boxes.float(), i), batch.original_sizes[i]
            )
            routing = _routing_of_image(recorder.records, batch, i) if capture_routing else None
            results.append(
                Detections(boxes.cpu(), det.scores.float().cpu(), det.embeddings.float().cpu(), routing)
            )
        return results

    @torch.no_grad()
    def embed_boxes(self, images: Sequence[ImageInput], boxes: Sequence[Any]) -> list[Tensor]:
        """Unit-norm float32 embeddings (N_i, D) on the CPU of the given boxes (N_i, 4, input pixels).

        The same path as the embeddings of `detect` (which are computed at the final boxes), so a query
        box and the detection of the same box get the same embedding.
        """
        if len(boxes) != len(images):
            raise ValueError(f"boxes: expected one (N, 4) array per image ({len(images)}), got {len(boxes)}")
        with _eval_mode(self):
            batch = self.transform(images, device=self.device)
            model_boxes = [
                batch.to_model_frame(as_boxes(b, self.device, f"boxes[{i}]"), i) for i, b in enumerate(boxes)
            ]
            trunk = self._trunk(batch.images.tensors, ("reid",))
            embeddings = self.head.embed(trunk, model_boxes)
        return [e.float().cpu() for e in embeddings]

    # -- checkpoints (fslora.models.checkpoint) -----------------------------------------------------

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        metrics: dict[str, float] | None = None,
        training_data: str | None = None,
    ) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + model card ``README.md`` into ``directory``."""
        from fslora.models.checkpoint import save_pretrained

        return save_pretrained(self, directory, metrics=metrics, training_data=training_data)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        revision: str | None = None,
        *,
        device: str | torch.device | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | None = None,
    ) -> FSLoRAPersonSearch:
        """Load from a local folder or a Hugging Face Hub repo id (see `fslora.models.checkpoint`)."""
        from fslora.models.checkpoint import load_pretrained

        return load_pretrained(
            cls,
            path_or_repo_id,
            revision=revision,
            device=device,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload ``save_pretrained``'s files to a Hub model repo; returns the commit URL."""
        from fslora.models.checkpoint import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    # -- internals ----------------------------------------------------------------------------------

    def _trunk(self, x: Tensor, streams: tuple[str, ...]) -> TrunkOutput:
        """Stages 0-2 of the backbone as the requested task streams (one shared stream without adapters).

        Only backbone calls run under autocast; their outputs come back float32, so the head (anchors,
        box coding, NMS, losses) always works in float32 - bf16 box coordinates would be 8 px coarse.
        """
        strides = [self.backbone.strides[i] for i in TRUNK_STAGES]
        with self._autocast():
            if self.config.use_adapters:
                features = forward_streams(self.backbone, x, tasks=streams, stages=TRUNK_STAGES)
            else:  # one stream serves both tasks
                features = dict.fromkeys(STREAMS, self.backbone.forward_intermediates(x, TRUNK_STAGES))
        features = {s: [f.float() for f in per_stage] for s, per_stage in features.items()}
        shared = not self.config.use_adapters
        return TrunkOutput(features, strides, shared=shared, run_stage=self._run_stage)

    def _run_stage(self, index: int, x: Tensor, streams: tuple[str, ...]) -> Tensor:
        tasks = streams if self.config.use_adapters else None
        with self._autocast():
            return run_stage(self.backbone, index, x, tasks=tasks).float()

    def _autocast(self) -> Any:
        if self.config.autocast_bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for a block; every submodule's previous mode comes back afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def _routing_of_image(records: dict[str, dict[str, Any]], batch: Batch, index: int) -> Routing:
    """The routing records of image ``index``: its batch row, cropped to the image (padding removed)."""
    padded_h, padded_w = batch.images.tensors.shape[-2:]
    h, w = batch.images.image_sizes[index]
    out: Routing = {}
    for layer, by_task in records.items():
        out[layer] = {}
        for task, rec in by_task.items():
            masks = rec.expert_masks
            mh = math.ceil(h * masks.shape[-2] / padded_h)
            mw = math.ceil(w * masks.shape[-1] / padded_w)
            freq = rec.freq_weights[index : index + 1] if rec.freq_weights is not None else None
            out[layer][task] = dataclasses.replace(
                rec, expert_masks=masks[index : index + 1, :, :mh, :mw].float(), freq_weights=freq
            )
    return out
