"""Unit tests of the person-search model parts and of the model's training / inference contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import fastrcnn_loss

from fslora.adapters import count_parameters
from fslora.models import (
    Detections,
    FSLoRAPersonSearch,
    NormAwareEmbedding,
    OIMLoss,
    PersonSearchConfig,
)
from fslora.models.heads import RoISampler
from fslora.models.transform import ImageTransform

ROOT = Path(__file__).resolve().parents[1]
LOSS_KEYS = {"loss_objectness", "loss_rpn_box_reg", "loss_box_reg", "loss_box_cls", "loss_oim"}


def tiny_config(**overrides) -> PersonSearchConfig:
    """nano backbone on 64x96 inputs with small sample counts: fast on a CPU."""
    d = {
        "backbone": "nano",
        "adapters": {"r": 4, "alpha": 4, "cutoff_mode": "relative", "cutoffs": [0.3, 0.4]},
        "transform": {"min_size": 64, "max_size": 96},
        "rpn": {
            "anchor_sizes": [16, 32, 64],
            "pre_nms_top_n_train": 200,
            "post_nms_top_n_train": 32,
            "pre_nms_top_n_test": 200,
            "post_nms_top_n_test": 16,
        },
        "roi": {"batch_size_per_image": 8, "output_size": 8},
        "oim": {"num_ids": 5, "queue_size": 4},
    }
    d.update(overrides)
    return PersonSearchConfig.from_dict(d)


def images_and_targets() -> tuple[list, list[dict]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), torch.rand(3, 70, 90)]
    targets = [
        {"boxes": [[5.0, 5.0, 25.0, 55.0], [40.0, 10.0, 60.0, 60.0]], "pids": [0, -1]},
        {"boxes": [[30.0, 8.0, 50.0, 60.0]], "pids": [3]},
    ]
    return images, targets


@pytest.fixture
def model(torch_single_thread) -> FSLoRAPersonSearch:
    torch.manual_seed(0)
    return FSLoRAPersonSearch(tiny_config())


# -- OIM ---------------------------------------------------------------------------------------------


def test_oim_initial_loss_is_uniform_over_lut_and_queue():
    oim = OIMLoss(dim=8, num_ids=5, queue_size=3)
    x = F.normalize(torch.randn(4, 8), dim=1)
    loss = oim(x, torch.tensor([0, 1, 2, 4]))
    assert loss.item() == pytest.approx(math.log(5 + 3), rel=1e-6)


def test_oim_momentum_update_of_the_lookup_table():
    oim = OIMLoss(dim=4, num_ids=3, queue_size=2, momentum=0.5).train()
    a, b = F.normalize(torch.randn(2, 4), dim=1)
    oim(a[None], torch.tensor([1]))
    assert torch.allclose(oim.lut[1], a)  # 0.5 * 0 + 0.5 * a, renormalised
    oim(b[None], torch.tensor([1]))
    assert torch.allclose(oim.lut[1], F.normalize(0.5 * a + 0.5 * b, dim=0))
    assert oim.lut[0].abs().sum() == 0 and oim.lut[2].abs().sum() == 0


def test_oim_circular_queue_and_no_update_in_eval():
    oim = OIMLoss(dim=2, num_ids=1, queue_size=3).train()
    x = F.normalize(torch.randn(5, 2), dim=1)
    oim(x[:2], torch.tensor([-1, -1]))
    oim(x[2:4], torch.tensor([-1, -1]))  # the second one wraps around to slot 0
    assert int(oim.queue_ptr) == 1
    assert torch.allclose(oim.queue, torch.stack([x[3], x[1], x[2]]))
    oim.eval()
    oim(x[4:], torch.tensor([-1]))
    assert int(oim.queue_ptr) == 1


def test_oim_gradient_and_unlabelled_only_batch():
    oim = OIMLoss(dim=4, num_ids=2, queue_size=2).train()
    oim.lut.copy_(F.normalize(torch.randn(2, 4), dim=1))
    x = F.normalize(torch.randn(3, 4), dim=1).requires_grad_(True)
    loss = oim(x, torch.tensor([0, 1, -1]))
    loss.backward()  # the LUT changed in place after the forward: must not break autograd
    assert x.grad is not None and x.grad[:2].abs().sum() > 0 and x.grad[2].abs().sum() == 0
    y = torch.randn(2, 4, requires_grad=True)
    zero = oim(F.normalize(y, dim=1), torch.tensor([-1, -1]))
    zero.backward()
    assert zero.item() == 0.0 and y.grad is not None


def test_oim_state_is_buffers_and_rejects_bad_pids():
    oim = OIMLoss(dim=4, num_ids=2, queue_size=2)
    assert not list(oim.parameters())
    assert {"lut", "queue", "queue_ptr"} <= set(oim.state_dict())
    with pytest.raises(ValueError, match="pids"):
        oim(F.normalize(torch.randn(1, 4), dim=1), torch.tensor([2]))
    with pytest.raises(ValueError, match="num_ids"):
        OIMLoss(dim=4, num_ids=0)


# -- head parts --------------------------------------------------------------------------------------


def test_two_class_logits_zero_z_give_bce_in_fastrcnn_loss():
    """NAEHead feeds [0, z] to torchvision's fastrcnn_loss: its cross-entropy is the BCE on z."""
    z = torch.randn(6)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    cls, _ = fastrcnn_loss(
        torch.stack([torch.zeros(6), z], 1), torch.zeros(6, 8), [labels], [torch.zeros(6, 4)]
    )
    assert cls.item() == pytest.approx(F.binary_cross_entropy_with_logits(z, labels.float()).item(), rel=1e-5)


def test_norm_aware_embedding_is_unit_and_logit_follows_the_norm():
    torch.manual_seed(0)
    emb = NormAwareEmbedding((6, 10), dim=8)
    emb.train()
    emb([torch.randn(16, 6), torch.randn(16, 10)])  # BN statistics
    emb.eval()
    a, b = torch.randn(4, 6), torch.randn(4, 10)
    e_small, logit_small = emb([a * 0.1, b * 0.1])
    e_big, logit_big = emb([a * 10, b * 10])
    assert e_big.shape == (4, 8)
    assert torch.allclose(e_big.norm(dim=1), torch.ones(4), atol=1e-5)
    raw = torch.cat([p(x) for p, x in zip(emb.projections, [a * 10, b * 10], strict=True)], 1)
    expected = emb.rescaler(raw.norm(dim=1, keepdim=True)).squeeze(1)
    assert torch.allclose(logit_big, expected)
    assert logit_small.shape == (4,)


def test_roi_sampler_ignores_background_far_from_every_person():
    sampler = RoISampler(
        0.5, 0.5, 0.1, batch_size_per_image=16, positive_fraction=0.5, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0)
    )
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    proposals = torch.tensor([[0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 3.0], [50.0, 50.0, 60.0, 60.0]])
    _, labels = sampler.assign_targets_to_proposals([proposals], [gt], [torch.ones(1, dtype=torch.long)])
    assert labels[0].tolist() == [1, 0, -1]  # IoU 0.9 fg, 0.3 bg, 0 ignored


# -- input transform ---------------------------------------------------------------------------------


def test_transform_accepts_uint8_numpy_and_float_tensors_alike():
    t = ImageTransform(64, 96, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
    img = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    as_tensor = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    a, b = t([img]), t([as_tensor])
    assert torch.equal(a.images.tensors, b.images.tensors)
    assert a.images.image_sizes == [(64, 96)] and a.original_sizes == [(32, 48)]
    boxes = torch.tensor([[4.0, 2.0, 20.0, 30.0]])
    assert torch.allclose(a.to_model_frame(boxes, 0), boxes * 2)
    assert torch.allclose(a.to_input_pixels(a.to_model_frame(boxes, 0), 0), boxes)


def test_transform_rejects_bad_images_and_targets():
    t = ImageTransform(64, 96, (0.5,) * 3, (0.5,) * 3)
    ok = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        t([ok, np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match=r"images\[0\]"):
        t([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="list"):
        t(ok)
    with pytest.raises(ValueError, match=r"targets\[0\]"):
        t([ok], [{"boxes": [[0, 0, 4, 4]], "pids": [1, 2]}])
    with pytest.raises(ValueError, match=r"targets\[0\].*x2 > x1"):
        t([ok], [{"boxes": [[5, 0, 4, 4]], "pids": [1]}])


# -- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nano", "tiny", "tiny_budget"])
def test_shipped_yaml_configs_load_and_round_trip(name):
    cfg = PersonSearchConfig.from_yaml(ROOT / "configs" / "models" / f"{name}.yaml")
    data = cfg.to_dict()
    again = PersonSearchConfig.from_dict(json.loads(json.dumps(data)))
    assert again == cfg
    assert data["architecture"] == "FSLoRAPersonSearch" and data["architecture_version"] == 1


def test_shipped_config_sizes():
    nano = PersonSearchConfig.from_yaml(ROOT / "configs" / "models" / "nano.yaml")
    tiny = PersonSearchConfig.from_yaml(ROOT / "configs" / "models" / "tiny.yaml")
    assert (nano.transform.min_size, nano.transform.max_size) == (384, 640)
    assert (tiny.transform.min_size, tiny.transform.max_size) == (900, 1500)
    assert tiny.backbone.dims == (96, 192, 384, 768) and tiny.backbone.depths == (2, 2, 8, 2)
    assert tiny.adapters.r == 32 and tiny.rpn.post_nms_top_n_test == 300 and tiny.roi.nms_thresh == 0.4


def test_budget_config_adds_less_than_two_percent_to_the_backbone():
    cfg = PersonSearchConfig.from_yaml(ROOT / "configs" / "models" / "tiny_budget.yaml")
    with torch.device("meta"):  # counting needs shapes only
        model = FSLoRAPersonSearch(cfg)
    counts = count_parameters(model.backbone)
    assert 0 < counts["adapter_fraction"] < 0.02, counts


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"rpn": {"nms_thresh": 1.5}}, "rpn.nms_thresh"),
        ({"roi": {"bogus": 1}}, "bogus"),
        ({"colour": "red"}, "colour"),
        ({"architecture_version": 99}, "architecture_version"),
        ({"backbone": {"preset": "nano", "num_classes": 10}}, "num_classes"),
        ({"backbone": "huge"}, "backbone"),
        ({"adapters": {"tasks": ["det"]}}, "tasks"),
        ({"adapters": {"r": 0}}, "r"),
        ({"transform": {"min_size": 900, "max_size": 100}}, "max_size"),
        ({"embedding_dim": 255}, "embedding_dim"),
        ({"person_score": "cosine"}, "person_score"),
    ],
)
def test_config_errors_name_the_field(data, field):
    with pytest.raises(ValueError, match=field):
        PersonSearchConfig.from_dict(data)


# -- model -------------------------------------------------------------------------------------------


def test_training_losses_and_gradients_reach_adapters_and_head_only(model):
    images, targets = images_and_targets()
    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(not p.requires_grad for n, p in model.backbone.named_parameters() if ".adapters." not in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".adapters." in n)
    for part in ("head.rpn.", "head.box_predictor.", "head.embedding."):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(part)), part


def test_baseline_without_adapters_trains_the_whole_backbone(torch_single_thread):
    torch.manual_seed(0)
    baseline = FSLoRAPersonSearch(tiny_config(use_adapters=False)).train()
    assert not any(".adapters." in n for n, _ in baseline.named_parameters())
    images, targets = images_and_targets()
    losses = baseline(images, targets)
    assert set(losses) == LOSS_KEYS
    sum(losses.values()).backward()
    stem = baseline.backbone.patch_embed[0].weight
    assert stem.requires_grad and stem.grad is not None and stem.grad.abs().sum() > 0
    assert len(baseline.detect(images, score_thresh=0.0)) == 2
    with pytest.raises(ValueError, match="use_adapters"):
        baseline.detect(images, capture_routing=True)


def test_det_person_score_comes_from_a_det_stream_classifier(torch_single_thread):
    torch.manual_seed(0)
    model = FSLoRAPersonSearch(tiny_config(person_score="det")).train()
    classifier = model.head.person_classifier
    assert classifier is not None and classifier[1].in_features == model.backbone.out_channels[-1]
    assert FSLoRAPersonSearch(tiny_config()).head.person_classifier is None  # the paper's norm score
    images, targets = images_and_targets()
    model.head.oim.lut.copy_(F.normalize(torch.randn_like(model.head.oim.lut), dim=1))  # OIM past step 0
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert classifier[1].weight.grad is not None and classifier[1].weight.grad.abs().sum() > 0
    assert model.head.embedding.rescaler.weight.grad is None  # the norm no longer scores people
    assert model.head.embedding.projections[0][0].weight.grad.abs().sum() > 0  # OIM still trains it
    # the classifier alone decides: its bias moves every score to ~1 or ~0
    with torch.no_grad():
        classifier[1].bias.fill_(20.0)
    found = model.detect(images, score_thresh=0.99)
    assert all(len(d) > 0 and bool((d.scores > 0.99).all()) for d in found)
    with torch.no_grad():
        classifier[1].bias.fill_(-20.0)
    assert all(len(d) == 0 for d in model.detect(images, score_thresh=0.01))


def test_image_without_people_and_misuse(model):
    images, targets = images_and_targets()
    targets[1] = {"boxes": np.zeros((0, 4), np.float32), "pids": np.zeros(0, np.int64)}
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="targets"):
        model(images, None)
    model.eval()
    with pytest.raises(ValueError, match="train"):
        model(images, targets)


def test_detect_and_embed_shapes_on_any_image_size(model):
    images = [np.random.default_rng(1).integers(0, 256, (70, 110, 3), dtype=np.uint8), torch.rand(3, 90, 60)]
    model.train()
    detections = model.detect(images, score_thresh=0.0)
    assert model.training, "detect must restore the training mode"
    for det, (h, w) in zip(detections, [(70, 110), (90, 60)], strict=True):
        assert isinstance(det, Detections) and 0 < len(det) <= model.config.roi.detections_per_img
        assert det.embeddings.shape == (len(det), 256) and det.embeddings.dtype == torch.float32
        assert torch.allclose(det.embeddings.norm(dim=1), torch.ones(len(det)), atol=1e-5)
        assert bool((det.boxes[:, 0::2] >= 0).all() and (det.boxes[:, 0::2] <= w).all())
        assert bool((det.boxes[:, 1::2] >= 0).all() and (det.boxes[:, 1::2] <= h).all())
        assert bool(((det.scores >= 0) & (det.scores <= 1)).all())
    queries = model.embed_boxes(images, [[[1.0, 2.0, 30.0, 60.0]], np.zeros((0, 4), np.float32)])
    assert queries[0].shape == (1, 256) and queries[1].shape == (0, 256)
    with pytest.raises(ValueError, match="one"):
        model.embed_boxes(images, [[[1.0, 2.0, 30.0, 60.0]]])
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        model.embed_boxes(images[:1], [[[30.0, 2.0, 10.0, 60.0]]])


def test_detections_validate_shapes():
    with pytest.raises(ValueError, match="scores"):
        Detections(torch.zeros(2, 4), torch.zeros(3), torch.zeros(2, 256))
    assert len(Detections.empty(256)) == 0


def test_box_head_chunking_changes_speed_only(model):
    images, _ = images_and_targets()
    boxes = [np.array([[1.0, 2.0, 30.0, 60.0], [20.0, 5.0, 50.0, 40.0], [0.0, 0.0, 90.0, 60.0]])] * 2
    model.head.box_head_chunk = 0
    whole = model.embed_boxes(images, boxes)
    model.head.box_head_chunk = 2  # 3 RoIs per image, 6 in all: three calls
    chunked = model.embed_boxes(images, boxes)
    for a, b in zip(whole, chunked, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
