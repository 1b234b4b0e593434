"""Official VMamba checkpoints: every key maps, parameter counts match, and outputs match the official code.

Key layouts and numeric fixtures come from ``shared/reference`` (see its README): the fixtures hold the
official implementation's logits and per-stage features for two small configs with random weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fslora.adapters import FSLoRAConfig, forward_streams, inject_backbone
from fslora.backbones import VMamba, VMambaConfig, load_official_vmamba

# the shared reference folder sits next to the repository; FSLORA_REFERENCE_DIR points elsewhere
REFERENCE = Path(
    os.environ.get("FSLORA_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference")
)

# (preset, tsv stem, official classification params, official backbone params) from the reference README
OFFICIAL = [
    ("tiny", "tiny_s1l8", 30_249_064, 29_481_408),
    ("small", "small_s2l15", 50_147_752, 49_380_096),
    ("base", "base_s2l15", 88_557_800, 87_534_592),
]
FIXTURES = {  # fixture name -> (preset, relative tolerance)
    "micro1": ("micro1", 1e-5),
    "micro2": ("micro2", 1e-5),
    "micro1_ssmstress": ("micro1", 1e-4),
    "micro2_ssmstress": ("micro2", 1e-4),
}


def read_key_tsv(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of meta tensors with the official key names and shapes."""
    state = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        assert dtype == "float32", (key, dtype)
        state[key] = torch.empty(json.loads(shape), device="meta")
    return state


def meta_model(preset: str, num_classes: int) -> VMamba:
    with torch.device("meta"):
        return VMamba(VMambaConfig.preset(preset, num_classes=num_classes))


def n_params(model: torch.nn.Module, skip_prefix: str | None = None) -> int:
    return sum(
        p.numel() for k, p in model.named_parameters() if skip_prefix is None or not k.startswith(skip_prefix)
    )


# -- key layouts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "stem", "n_cls", "n_backbone"), OFFICIAL)
def test_parameter_counts_equal_official(preset: str, stem: str, n_cls: int, n_backbone: int) -> None:
    # the classification model has no outnorm{i}; the detection wrapper has no classifier
    assert n_params(meta_model(preset, 1000), skip_prefix="outnorm") == n_cls
    assert n_params(meta_model(preset, 0)) == n_backbone


@pytest.mark.parametrize(("preset", "stem", "n_cls", "n_backbone"), OFFICIAL)
def test_classification_keys_map(preset: str, stem: str, n_cls: int, n_backbone: int) -> None:
    official = read_key_tsv(REFERENCE / f"vmamba_{stem}_keys.tsv")
    model = meta_model(preset, 1000)
    ours = set(model.state_dict())
    assert ours - set(official) == {f"outnorm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert load_official_vmamba(model, official) == ([], [])
    # a backbone-only model drops the classifier without calling it unexpected
    assert load_official_vmamba(meta_model(preset, 0), {"model": official}) == ([], [])


@pytest.mark.parametrize(("preset", "stem", "n_cls", "n_backbone"), OFFICIAL)
def test_detection_backbone_keys_map(preset: str, stem: str, n_cls: int, n_backbone: int) -> None:
    official = read_key_tsv(REFERENCE / f"vmamba_{stem}_backbone_keys.tsv")
    model = meta_model(preset, 0)
    assert set(model.state_dict()) == set(official)
    assert load_official_vmamba(model, official) == ([], [])
    # our classifier is missing from a detection checkpoint and must be reported
    missing, unexpected = load_official_vmamba(meta_model(preset, 1000), official)
    assert sorted(missing) == ["classifier.head.bias", "classifier.head.weight", "classifier.norm.bias",
                               "classifier.norm.weight"]  # fmt: skip
    assert unexpected == []


def test_wrong_shape_names_the_key() -> None:
    official = read_key_tsv(REFERENCE / "vmamba_tiny_s1l8_keys.tsv")
    official["layers.2.blocks.3.op.A_logs"] = torch.empty(384, 4, device="meta")
    with pytest.raises(ValueError, match=r"layers\.2\.blocks\.3\.op\.A_logs"):
        load_official_vmamba(meta_model("tiny", 1000), official)
    with pytest.raises(ValueError, match=r"classifier\.head\.weight.*num_classes"):
        load_official_vmamba(meta_model("tiny", 10), read_key_tsv(REFERENCE / "vmamba_tiny_s1l8_keys.tsv"))


def test_unexpected_keys_and_ema_unwrap() -> None:
    official = read_key_tsv(REFERENCE / "vmamba_tiny_s1l8_backbone_keys.tsv")
    extra = {**official, "layers.0.blocks.0.op.x_proj_bias": torch.empty(4, 8, device="meta")}
    assert load_official_vmamba(meta_model("tiny", 0), {"model": extra}) == (
        [],
        ["layers.0.blocks.0.op.x_proj_bias"],
    )
    checkpoint = {"model": extra, "model_ema": official, "epoch": 264}
    assert load_official_vmamba(meta_model("tiny", 0), checkpoint, use_ema=True) == ([], [])
    with pytest.raises(ValueError, match="model_ema"):
        load_official_vmamba(meta_model("tiny", 0), {"model": official}, use_ema=True)


# -- numeric fixtures of the official implementation --------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def fixture(request: pytest.FixtureRequest) -> tuple[str, dict[str, torch.Tensor]]:
    return request.param, load_file(REFERENCE / f"vmamba_{request.param}_fixture.safetensors")


def official_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Classification weights plus the detection wrapper's outnorm{i}, under official names."""
    state = {}
    for prefix in ("weights.", "backbone_weights."):
        state.update({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
    return state


def loaded_model(name: str, tensors: dict[str, torch.Tensor]) -> VMamba:
    model = VMamba(VMambaConfig.preset(FIXTURES[name][0], num_classes=10)).eval()
    assert load_official_vmamba(model, {"model": official_state(tensors)}) == ([], [])
    return model


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    assert actual.shape == expected.shape, what
    err = (actual - expected).abs().max().item() / expected.abs().max().item()
    assert err <= rel, f"{what}: max error {err:.2e} of the largest value > {rel:.0e}"


@pytest.mark.parametrize("backend", ["reference", "chunked", "cpu"])
def test_matches_official_outputs(fixture: tuple[str, dict[str, torch.Tensor]], backend: str) -> None:
    name, tensors = fixture
    rel = FIXTURES[name][1]
    model = loaded_model(name, tensors)
    model.set_scan_backend(backend)
    for xi in ("x1", "x2"):
        x = tensors[f"inputs.{xi}"]
        with torch.no_grad():
            logits, features = model(x), model.forward_features(x)
            block = model.layers[0].blocks[0]
            block_in = block.norm(model.patch_embed(x))
            merged = block.op.scan_features(block_in)
        # first SS2D block intermediates locate a bug before the end-to-end checks
        assert_close_rel(block_in, tensors[f"debug.block0_ss2d_in_{xi}"], rel, f"{name} {xi} block0 input")
        assert_close_rel(merged, tensors[f"debug.block0_ss2d_merged_{xi}"], rel, f"{name} {xi} merged scan")
        assert_close_rel(logits, tensors[f"outputs.logits_{xi}"], rel, f"{name} {xi} logits")
        for i, feat in enumerate(features):
            assert_close_rel(feat, tensors[f"outputs.backbone_{xi}_{i}"], rel, f"{name} {xi} stage {i}")


def test_classification_checkpoint_resets_outnorms() -> None:
    tensors = load_file(REFERENCE / "vmamba_micro1_fixture.safetensors")
    classification = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    model = VMamba(VMambaConfig.preset("micro1"))
    with torch.no_grad():
        model.outnorm2.weight.fill_(3.0)
    assert load_official_vmamba(model, {"model": classification}) == ([], [])
    for i in range(4):
        assert torch.equal(model.outnorm(i).weight, torch.ones_like(model.outnorm(i).weight))
        assert torch.equal(model.outnorm(i).bias, torch.zeros_like(model.outnorm(i).bias))
    assert torch.equal(model.layers[1].blocks[0].op.Ds, classification["layers.1.blocks.0.op.Ds"])


def test_loads_under_fslora_and_keeps_official_outputs() -> None:
    """Official keys land in the adapters' base layers; fresh adapters leave the outputs unchanged."""
    tensors = load_file(REFERENCE / "vmamba_micro2_fixture.safetensors")
    model = VMamba(VMambaConfig.preset("micro2", num_classes=10)).eval()
    inject_backbone(model, FSLoRAConfig(r=4, cutoffs=(0.3, 0.4), cutoff_mode="relative", tasks=("det",)))
    assert load_official_vmamba(model, official_state(tensors)) == ([], [])
    in_proj = model.layers[0].blocks[0].op.in_proj
    assert torch.equal(in_proj.base_layer.weight, tensors["weights.layers.0.blocks.0.op.in_proj.weight"])
    # our own state dict (adapters included) loads back through the early return
    assert load_official_vmamba(model, model.state_dict()) == ([], [])
    with torch.no_grad():
        features = forward_streams(model, tensors["inputs.x2"], tasks=("det",))["det"]
    for i, feat in enumerate(features):
        assert_close_rel(feat, tensors[f"outputs.backbone_x2_{i}"], 1e-5, f"stage {i}")
