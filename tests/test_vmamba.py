"""VMamba backbone: scan orderings, shapes, config, dual task streams and FSLoRA injection (nano, CPU)."""

from __future__ import annotations

import importlib.abc
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fslora.adapters import (
    FSLoRAConfig,
    FSLoRALayer,
    adapter_targets,
    forward_streams,
    fslora_layers,
    inject_backbone,
    inject_fslora,
    run_stage,
)
from fslora.backbones import LayerNorm2d, Linear2d, VMamba, VMambaConfig, cross_merge, cross_scan

ADAPTERS = FSLoRAConfig(r=4, cutoffs=(0.3, 0.4), cutoff_mode="relative")


def nano(**overrides) -> VMamba:
    torch.manual_seed(0)
    return VMamba(VMambaConfig.preset("nano", **overrides)).eval()


def images(batch: int = 2, height: int = 32, width: int = 48) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


# -- layers -----------------------------------------------------------------------------------------------


def test_channel_first_layers_equal_channel_last_torch_layers() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7)
    linear = Linear2d(6, 4)
    assert isinstance(linear, nn.Linear) and Linear2d.channel_first is True
    expected = nn.functional.linear(x.permute(0, 2, 3, 1), linear.weight, linear.bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(linear(x), expected)
    norm = LayerNorm2d(6)
    nn.init.normal_(norm.weight)
    expected = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-5)
    torch.testing.assert_close(norm(x), expected.permute(0, 3, 1, 2))


# -- cross-scan / cross-merge ------------------------------------------------------------------------------


def test_cross_scan_orders() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    xs = cross_scan(x)[0, :, 0]
    assert xs.tolist() == [
        [0, 1, 2, 3, 4, 5],  # row-major
        [0, 3, 1, 4, 2, 5],  # column-major
        [5, 4, 3, 2, 1, 0],
        [5, 2, 4, 1, 3, 0],
    ]


@pytest.mark.parametrize(("height", "width"), [(4, 6), (5, 3), (1, 7)])
def test_cross_merge_inverts_cross_scan(height: int, width: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, height, width)
    torch.testing.assert_close(cross_merge(cross_scan(x), height, width), 4 * x)
    # merge is the adjoint (transpose) of scan: <scan(x), y> = <x, merge(y)>
    y = torch.randn(2, 4, 3, height * width)
    lhs = (cross_scan(x) * y).sum()
    rhs = (x * cross_merge(y, height, width)).sum()
    torch.testing.assert_close(lhs, rhs)


# -- shapes and config ---------------------------------------------------------------------------------------


def test_odd_input_sizes_give_ceil_stage_sizes() -> None:
    model = nano()
    height, width = 134, 198  # odd at every step: 67x99 -> 34x50, 17x25, 9x13, 5x7
    with torch.no_grad():
        features = model.forward_features(images(1, height, width))
    expected = []
    height, width = math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)  # patch embed
    for channels in model.out_channels:  # then each downsample halves, rounding up
        expected.append((1, channels, height, width))
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    assert [tuple(f.shape) for f in features] == expected
    assert expected[0] == (1, 32, 34, 50) and expected[3] == (1, 256, 5, 7)


def test_classifier_and_backbone_only_model() -> None:
    model = nano(num_classes=7)
    with torch.no_grad():
        assert model(images()).shape == (2, 7)
    with pytest.raises(ValueError, match="num_classes=0"):
        nano()(images())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        nano().forward_features(torch.zeros(1, 1, 32, 32))


def test_config_presets_and_validation(tmp_path) -> None:
    tiny = VMambaConfig.preset("tiny")
    assert tiny.dims == (96, 192, 384, 768) and tiny.depths == (2, 2, 8, 2)
    assert [tiny.stage_dt_rank(i) for i in range(4)] == [6, 12, 24, 48]
    assert VMambaConfig.preset("small").ssm_ratio == 2.0 and VMambaConfig.preset("base").dims[0] == 128
    micro2 = VMambaConfig.preset("micro2")
    assert (micro2.dims[0], micro2.depths, micro2.d_state) == (24, (1, 2, 1, 1), 4)
    assert VMambaConfig.from_dict(tiny.to_dict()) == tiny
    (tmp_path / "bb.yaml").write_text("preset: nano\nsplit_from_stage: 2\n")
    assert VMambaConfig.from_yaml(tmp_path / "bb.yaml") == VMambaConfig.preset("nano", split_from_stage=2)
    for field, value in [
        ("depths", (1, 1, 1)),
        ("dt_rank", "big"),
        ("split_from_stage", 4),
        ("backend", "triton"),
        ("drop_path_rate", 1.0),
    ]:
        with pytest.raises(ValueError, match=f"VMambaConfig.{field}"):
            VMambaConfig(**{field: value})
    with pytest.raises(ValueError, match="unknown field"):
        VMambaConfig.from_dict({"dim": 96})
    with pytest.raises(ValueError, match="unknown name"):
        VMambaConfig.preset("huge")


def test_drop_path_schedule_and_eval_determinism() -> None:
    model = nano(drop_path_rate=0.3)
    rates = [block.drop_path.p for stage in model.layers for block in stage.blocks]
    assert rates == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3])
    plain = nano()
    plain.load_state_dict(model.state_dict())
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x)[3], plain.forward_features(x)[3])
        model.train()
        torch.manual_seed(3)
        dropped = model.forward_features(x)[3]
    assert not torch.allclose(dropped, plain.forward_features(x)[3].detach())


def test_auto_backend_on_cpu_never_imports_mamba_ssm() -> None:
    attempts: list[str] = []

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname.split(".")[0] == "mamba_ssm":
                attempts.append(fullname)
            return None

    recorder = Recorder()
    sys.meta_path.insert(0, recorder)
    try:
        model = nano(backend="auto")
        with torch.no_grad():
            model.forward_features(images(1, 32, 32))
    finally:
        sys.meta_path.remove(recorder)
    assert attempts == [] and "mamba_ssm" not in sys.modules


def test_scan_backends_agree_and_backend_switch_validates() -> None:
    model = nano()
    x = images(1, 40, 56)
    with torch.no_grad():
        model.set_scan_backend("reference")
        reference = model.forward_features(x)
        model.set_scan_backend("chunked")
        chunked = model.forward_features(x)
        model.set_scan_backend("cpu")
        kernel = model.forward_features(x)
    for r, c, k in zip(reference, chunked, kernel, strict=True):
        torch.testing.assert_close(c, r, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(k, r, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        model.set_scan_backend("fast")


# -- stages and streams -----------------------------------------------------------------------------------


def test_run_stage_chains_to_forward_features() -> None:
    model = nano()
    x = images()
    with torch.no_grad():
        expected = model.forward_features(x)
        h = model.stem(x)
        for i in range(4):
            torch.testing.assert_close(run_stage(model, i, h), expected[i])
            h = run_stage(model, i, h, output=False)
    with pytest.raises(ValueError, match="index"):
        run_stage(model, 4, h)


@pytest.mark.parametrize("split", [0, 2])
def test_fresh_adapters_keep_features_and_perturbing_one_task_changes_only_it(split: int) -> None:
    model = nano(split_from_stage=split)
    x = images()
    with torch.no_grad():
        plain = model.forward_features(x)
        plain_streams = forward_streams(model, x)  # dual streams without adapters
    inject_backbone(model, ADAPTERS)
    with torch.no_grad():
        streams = forward_streams(model, x)
    for task in ("det", "reid"):
        for ours, ref in zip(streams[task], plain, strict=True):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        for ours, ref in zip(plain_streams[task], plain, strict=True):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)

    with torch.no_grad():  # make the det experts of the first adapted block non-zero
        layer = model.layers[split].blocks[0].mlp.fc2
        nn.init.normal_(layer.adapters["det"].lora_B.experts.weight, std=0.5)
        streams = forward_streams(model, x)
    for i in range(4):
        torch.testing.assert_close(streams["reid"][i], plain[i], rtol=1e-5, atol=1e-5)
        det_changed = not torch.allclose(streams["det"][i], plain[i], rtol=1e-4, atol=1e-4)
        assert det_changed == (i >= split), f"stage {i}"


def test_forward_streams_stage_subset_and_single_task() -> None:
    model = inject_backbone(nano(split_from_stage=1), ADAPTERS)
    x = images()
    with torch.no_grad():
        out = forward_streams(model, x, tasks=("reid",), stages=(1, 2))
        full = forward_streams(model, x)
    assert list(out) == ["reid"] and [f.shape[1] for f in out["reid"]] == [64, 128]
    torch.testing.assert_close(out["reid"][1], full["reid"][2], rtol=1e-5, atol=1e-5)
    # the task context is restored afterwards
    assert all(layer.active_tasks == ("det", "reid") for layer in fslora_layers(model).values())
    with pytest.raises(ValueError, match="stages"):
        forward_streams(model, x, stages=(2, 1))
    with pytest.raises(ValueError, match="tasks"):
        forward_streams(model, x, tasks=())
    # adapters placed before the split by hand would see an unstacked batch: refused
    early = inject_fslora(nano(split_from_stage=1), FSLoRAConfig(r=2, flm=False, target_modules=["mlp.fc1"]))
    with pytest.raises(ValueError, match=r"split_from_stage=1 \(layers\.0\."):
        forward_streams(early, x)


def test_run_stage_as_box_head_on_stacked_batch() -> None:
    model = inject_backbone(nano(), ADAPTERS)
    with torch.no_grad():
        nn.init.normal_(model.layers[3].blocks[0].op.in_proj.adapters["reid"].lora_B.experts.weight)
        rois = torch.randn(3, 128, 14, 14)  # stage-2 RoI features, shared by both tasks
        stacked = torch.cat([rois, rois])
        out = run_stage(model, 3, stacked)
        det_only = run_stage(model, 3, rois, tasks=("det",))
    assert out.shape == (6, 256, 7, 7)
    torch.testing.assert_close(out[:3], det_only, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[3:], out[:3], atol=1e-4)


def test_inject_targets_only_split_stages_and_trains_only_adapters() -> None:
    model = inject_backbone(nano(split_from_stage=1), ADAPTERS)
    layers = fslora_layers(model)
    assert len(layers) == 4 * (1 + 2 + 1)  # four linears per block in stages 1-3
    assert all(not name.startswith("layers.0.") for name in layers)
    assert isinstance(model.layers[1].blocks[0].op.out_proj, FSLoRALayer)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".adapters." in name for name in trainable)

    streams = forward_streams(model, images(1, 32, 32))
    (streams["det"][3].square().mean() + streams["reid"][3].square().mean()).backward()
    adapter_a = model.layers[1].blocks[0].mlp.fc1.adapters["det"].lora_A.weight
    assert adapter_a.grad is None or adapter_a.grad.abs().sum() == 0  # experts are zero at init
    experts = model.layers[1].blocks[0].mlp.fc1.adapters["det"].lora_B.experts.weight
    assert experts.grad is not None and experts.grad.abs().sum() > 0
    assert model.layers[1].blocks[0].mlp.fc1.base_layer.weight.grad is None
    assert model.patch_embed[0].weight.grad is None


def test_inject_subset_and_no_match() -> None:
    only_fc2 = FSLoRAConfig(r=2, flm=False, target_modules=["mlp.fc2"])
    model = inject_backbone(nano(split_from_stage=3), only_fc2)
    assert list(fslora_layers(model)) == ["layers.3.blocks.0.mlp.fc2"]
    regex = adapter_targets(nano(), r"layers\.2\..*op\.(in|out)_proj")
    assert regex == [f"layers.2.blocks.{j}.op.{p}_proj" for j in range(2) for p in ("in", "out")]
    with pytest.raises(ValueError, match="target_modules"):
        inject_backbone(nano(), FSLoRAConfig(target_modules=["x_proj"]))


def test_shipped_backbone_configs_load() -> None:
    paths = sorted((Path(__file__).resolve().parents[1] / "configs" / "backbones").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"nano", "tiny"}
    for path in paths:  # each file is named after the preset it starts from
        config, preset = VMambaConfig.from_yaml(path), VMambaConfig.preset(path.stem)
        assert (config.dims, config.depths, config.d_state, config.ssm_ratio) == (
            preset.dims,
            preset.depths,
            preset.d_state,
            preset.ssm_ratio,
        ), path.name
