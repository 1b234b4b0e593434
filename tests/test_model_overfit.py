"""End-to-end check of the person-search model: it can overfit a few synthetic images.

Two 96x144 scenes hold the same three people (identity = clothing colours and stripe frequency) at
different places. A nano FSLoRA model (frozen random backbone, adapters + head trained) is trained for
a fixed number of CPU steps; then the loss must have dropped by > 80 %, `detect` must find every person
(IoU >= 0.5), and each person's embedding must be closest to the same person in the other image. The
trained model also serves the `embed_boxes` consistency and routing-capture checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from fslora.models import Detections, FSLoRAPersonSearch, PersonSearchConfig

STEPS = 64  # Adam + one-cycle schedule; about 0.6 s a step on one CPU thread
HEIGHT, WIDTH = 96, 144
# (top colour, bottom colour) per identity; stripes of period 2 + 2 * pid rows.
CLOTHES = [((220, 40, 40), (30, 30, 160)), ((40, 200, 60), (230, 200, 40)), ((200, 60, 220), (20, 160, 200))]
LAYOUTS = [  # (box x1, y1, x2, y2 in pixels, pid) per image
    [((7, 15, 30, 75), 0), ((52, 22, 75, 82), 1), ((105, 10, 129, 78), 2)],
    [((15, 18, 39, 82), 1), ((67, 7, 90, 70), 2), ((100, 22, 123, 88), 0)],
]


def draw_person(img: np.ndarray, box: tuple[int, int, int, int], pid: int) -> None:
    """A head block over a striped two-colour body."""
    x1, y1, x2, y2 = box
    h, w = y2 - y1, x2 - x1
    img[y1 : y1 + h // 5, x1 + w // 4 : x2 - w // 4] = (230, 190, 160)
    rows = np.arange(y1 + h // 5, y2)[:, None, None]
    stripes = 0.6 + 0.4 * ((rows // (2 + 2 * pid)) % 2)
    top, bottom = (np.array(c, dtype=np.float32) for c in CLOTHES[pid])
    colour = np.where(rows < y1 + h // 2, top, bottom)
    img[y1 + h // 5 : y2, x1:x2] = (colour * stripes).astype(np.uint8)


def make_scenes() -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    images, targets = [], []
    for layout in LAYOUTS:
        img = rng.normal(110, 12, (HEIGHT, WIDTH, 3)).clip(0, 255).astype(np.uint8)
        for box, pid in layout:
            draw_person(img, box, pid)
        images.append(img)
        targets.append(
            {
                "boxes": np.array([b for b, _ in layout], dtype=np.float32),
                "pids": np.array([p for _, p in layout], dtype=np.int64),
            }
        )
    return images, targets


def small_config() -> PersonSearchConfig:
    """nano backbone with small anchors, sample counts and RoIs for 96x144 inputs (CPU budget)."""
    return PersonSearchConfig.from_dict(
        {
            "name": "overfit-test",
            "backbone": "nano",
            "adapters": {"r": 8, "alpha": 8, "cutoff_mode": "relative", "cutoffs": [0.3, 0.4]},
            "transform": {"min_size": HEIGHT, "max_size": WIDTH},
            "rpn": {
                "anchor_sizes": [16, 32, 64, 128],
                "batch_size_per_image": 64,
                "pre_nms_top_n_train": 300,
                "post_nms_top_n_train": 64,
                "pre_nms_top_n_test": 300,
                "post_nms_top_n_test": 32,
            },
            "roi": {"batch_size_per_image": 16, "output_size": 8},  # 8x8 RoIs: the box head is the cost
            "oim": {"num_ids": 3, "queue_size": 8},
        }
    )


@pytest.fixture(scope="module")
def trained() -> tuple[FSLoRAPersonSearch, list[np.ndarray], list[dict[str, np.ndarray]], list[float]]:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only wait on each other on a shared CPU
    try:
        torch.manual_seed(0)
        images, targets = make_scenes()
        model = FSLoRAPersonSearch(small_config()).train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=5e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=5e-3, total_steps=STEPS, pct_start=0.15
        )
        history = []
        for _ in range(STEPS):
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(loss.item())
        model.eval()
        yield model, images, targets, history
    finally:
        torch.set_num_threads(previous_threads)


def matched(det: Detections, gt_boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Best IoU and the index of the best detection for every ground-truth box."""
    iou = box_iou(torch.as_tensor(gt_boxes), det.boxes)
    return iou.max(dim=1)


def test_loss_drops_by_more_than_80_percent(trained):
    _, _, _, history = trained
    start, end = history[0], float(np.mean(history[-5:]))
    assert np.isfinite(history).all()
    assert end < 0.2 * start, f"loss {start:.3f} -> {end:.3f}"


def test_detect_finds_every_person(trained):
    model, images, targets, _ = trained
    detections = model.detect(images, score_thresh=0.5)
    found = total = 0
    for det, target in zip(detections, targets, strict=True):
        assert det.boxes.dtype == torch.float32 and det.embeddings.dtype == torch.float32
        assert torch.allclose(det.embeddings.norm(dim=1), torch.ones(len(det)), atol=1e-5)
        assert bool((det.scores[:-1] >= det.scores[1:]).all()), "scores must be sorted"
        best_iou, _ = matched(det, target["boxes"])
        found += int((best_iou >= 0.5).sum())
        total += len(best_iou)
    assert found / total >= 0.9, f"recall {found}/{total}"


def test_same_identity_embeddings_are_closest(trained):
    model, images, targets, _ = trained
    detections = model.detect(images, score_thresh=0.5)
    per_image = []
    for det, target in zip(detections, targets, strict=True):
        _, idx = matched(det, target["boxes"])
        order = np.argsort(target["pids"])  # rows by pid 0, 1, 2
        per_image.append(det.embeddings[idx][order])
    similarity = per_image[0] @ per_image[1].T  # pid x pid across the two images
    for pid in range(len(CLOTHES)):
        others = [similarity[pid, j] for j in range(len(CLOTHES)) if j != pid]
        assert similarity[pid, pid] > max(others), f"pid {pid}: {similarity}"


def test_embed_boxes_matches_detect_embeddings(trained):
    model, images, _, _ = trained
    detections = model.detect(images, score_thresh=0.5)
    queries = model.embed_boxes(images, [d.boxes for d in detections])
    for det, emb in zip(detections, queries, strict=True):
        assert emb.shape == det.embeddings.shape and len(det) > 0
        cosine = (emb * det.embeddings).sum(dim=1)
        assert bool((cosine > 0.99).all()), cosine
        assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-5)


def test_embed_boxes_of_a_box_in_original_pixels_of_a_resized_image(trained):
    """A bigger copy of an image is resized by the model; the same person gives the same embedding."""
    model, images, targets, _ = trained
    big = np.repeat(np.repeat(images[0], 2, axis=0), 2, axis=1)  # twice the size, the model resizes it back
    small_emb = model.embed_boxes([images[0]], [targets[0]["boxes"]])[0]
    big_emb = model.embed_boxes([big], [targets[0]["boxes"] * 2])[0]
    assert bool(((small_emb * big_emb).sum(dim=1) > 0.95).all())


def test_routing_capture_has_det_and_reid_masks_at_every_adapted_layer(trained):
    model, images, _, _ = trained
    detections = model.detect(images[:1], score_thresh=0.5, capture_routing=True)
    det = detections[0]
    assert len(det) > 0 and det.routing is not None
    adapted = {name for name, m in model.backbone.named_modules() if type(m).__name__ == "FSLoRALayer"}
    trunk_layers = {n for n in adapted if not n.startswith("layers.3.")}  # stage 3 runs on RoIs
    assert set(det.routing) == trunk_layers
    for name, by_task in det.routing.items():
        assert set(by_task) == {"det", "reid"}, name
        for record in by_task.values():
            masks = record.expert_masks
            assert masks.shape[:2] == (1, 2), (name, masks.shape)
            assert torch.allclose(masks.sum(dim=1), torch.ones_like(masks[:, 0]), atol=1e-4)
            assert record.freq_weights is not None and record.freq_weights.shape == (1, 2)
    # the two tasks route differently after training (independent adapters)
    first = det.routing[min(trunk_layers)]
    assert not torch.allclose(first["det"].expert_masks, first["reid"].expert_masks)
    # without capture there is no routing
    assert model.detect(images[:1])[0].routing is None
