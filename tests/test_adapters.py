"""FSLoRA adapter math: identity at init, FLM/SLM behaviour, freezing, routing capture, variants."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import fslora
from fslora.adapters import FrequencyModule, FSLoRAAdapter, FSLoRALayer, SpatialModule, frequency_masks
from fslora.adapters.frequency import frequency_radius

LAYOUTS = ["channel_last", "linear2d", "conv1x1"]
SWITCHES = [  # (slm, flm, flm_position)
    (False, False, "between"),
    (True, False, "between"),
    (False, True, "between"),
    (True, True, "between"),
    (True, True, "before"),
    (True, True, "after"),
]

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def small_config(**kw) -> fslora.FSLoRAConfig:
    return fslora.FSLoRAConfig(**{"r": 4, "cutoffs": (2.0, 4.0), **kw})


def random_loss(out: torch.Tensor) -> torch.Tensor:
    """A loss with a dense, seeded gradient (a LayerNorm output's mean square would be constant)."""
    g = torch.Generator().manual_seed(123)
    return (out * torch.randn(out.shape, generator=g)).sum()


# -- identity at init ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("slm", "flm", "position"), SWITCHES)
def test_adapted_model_equals_frozen_at_init(make_toy, layout, slm, flm, position):
    model = make_toy(layout)
    x = model.example_input()
    with torch.no_grad():
        ref = model(x)
        fslora.inject_fslora(model, small_config(slm=slm, flm=flm, flm_position=position))
        single = model(x[:0].new_empty(0, *x.shape[1:]))  # empty batch is fine too
        out = model(fslora.stack_streams(x, 2))
    assert single.shape[0] == 0
    det, reid = fslora.split_streams(out, 2)
    assert torch.equal(det, ref)
    assert torch.equal(reid, ref)


def test_tokens_without_flm_equal_frozen_and_flm_needs_grid():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    x = torch.randn(4, 7, 6)
    ref = lin(x)
    layer = FSLoRALayer(lin, small_config(flm=False, tasks=("det",)))
    assert torch.equal(layer(x), ref)
    layer_flm = FSLoRALayer(nn.Linear(6, 5), small_config(tasks=("det",)))
    with pytest.raises(ValueError, match="FLM needs a spatial grid"):
        layer_flm(x)


def test_tokens_route_like_a_one_column_map(perturb_adapters):
    """On tokens (B, L, d) SLM routes each token exactly as on the map (B, L, 1, d)."""
    torch.manual_seed(0)
    layer = FSLoRALayer(nn.Linear(6, 5), small_config(flm=False, n_experts=3))
    perturb_adapters(layer)
    tokens = torch.randn(4, 7, 6)  # two tasks x two sequences of 7 tokens
    with torch.no_grad():
        expected = layer(tokens[:, :, None, :])[:, :, 0, :]
        out = layer(tokens)
        flat = layer(tokens.reshape(28, 6))  # (N, d) tokens: 14 per task
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(flat, expected.reshape(28, 5), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(out, layer.base_layer(tokens), atol=1e-3)


def test_flm_alone_is_identity_at_init():
    torch.manual_seed(0)
    for h, w in [(12, 11), (16, 20), (7, 9)]:
        z = torch.randn(3, 5, h, w)
        for mode, cut in [("absolute", (2.0, 4.0)), ("relative", (0.3, 0.4))]:
            flm = FrequencyModule(5, cut, mode)
            out, weights = flm.forward_with_weights(z)
            assert out.shape == z.shape
            assert (out - z).abs().max() < 1e-5
            assert torch.equal(weights, torch.full((3, 2), 0.5))


def test_flm_router_selects_bands():
    """A router saturated to one band returns 2x that band of the spectrum."""
    torch.manual_seed(0)
    z = torch.randn(2, 3, 16, 14)
    flm = FrequencyModule(3, (3.0, 5.0))
    low, high = frequency_masks(16, 14, (3.0, 5.0))
    spectrum = torch.fft.rfft2(z, norm="ortho")
    for bias, mask in [((30.0, -30.0), low), ((-30.0, 30.0), high)]:
        with torch.no_grad():
            flm.router.bias.copy_(torch.tensor(bias))
        expected = torch.fft.irfft2(2 * mask * spectrum, s=(16, 14), norm="ortho")
        torch.testing.assert_close(flm(z), expected, atol=1e-5, rtol=1e-5)
    # the two bands of a signal add back to the signal
    lo = torch.fft.irfft2(low * spectrum, s=(16, 14), norm="ortho")
    hi = torch.fft.irfft2(high * spectrum, s=(16, 14), norm="ortho")
    torch.testing.assert_close(lo + hi, z, atol=1e-5, rtol=1e-5)


def test_flm_runs_fft_in_float32_under_autocast():
    torch.manual_seed(0)
    flm = FrequencyModule(4, (2.0, 4.0))
    z = torch.randn(2, 4, 8, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = flm(z)
    assert out.dtype == torch.bfloat16
    assert (out.float() - z.float()).abs().max() < 1e-2


@pytest.mark.parametrize("layout", ["channel_last", "linear2d"])
def test_layer_under_autocast_and_in_bfloat16(make_toy, perturb_adapters, layout):
    model = make_toy(layout)
    fslora.inject_fslora(model, small_config())
    perturb_adapters(model, scale=0.02)  # larger random adapters blow activations up to ~1e3
    x = fslora.stack_streams(model.example_input(), 2)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
        model.to(torch.bfloat16)
        half = model(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    for out in (mixed, half):
        err = (out.float() - reference).abs().max().item()
        assert err < 0.05 * reference.abs().max().item(), (out.dtype, err)


# -- masks --------------------------------------------------------------------------------------------


def test_masks_partition_ramp_and_symmetry():
    h, w, (c_lo, c_hi) = 40, 33, (6.0, 10.0)
    low, high = frequency_masks(h, w, (c_lo, c_hi))
    rho = frequency_radius(h, w).float()
    assert low.shape == (h, w // 2 + 1)
    assert torch.equal(low + high, torch.ones_like(low))
    assert torch.all(low[rho <= c_lo] == 1) and torch.all(low[rho >= c_hi] == 0)
    ramp = (rho > c_lo) & (rho < c_hi)
    assert ramp.any()
    torch.testing.assert_close(low[ramp], (c_hi - rho[ramp]) / (c_hi - c_lo))
    # signed row frequencies: row k and row h-k have the same radius
    assert torch.equal(low[1:], low[1:].flip(0))
    assert low[0, 0] == 1 and high[h // 2, w // 2] == 1


def test_relative_cutoffs_scale_with_nyquist_radius():
    h, w = 20, 30
    nyquist = (10**2 + 15**2) ** 0.5
    rel = frequency_masks(h, w, (0.3, 0.4), "relative")[0]
    ab = frequency_masks(h, w, (0.3 * nyquist, 0.4 * nyquist), "absolute")[0]
    torch.testing.assert_close(rel, ab)
    # the same fractions keep the same share of the spectrum at twice the resolution
    rel2 = frequency_masks(2 * h, 2 * w, (0.3, 0.4), "relative")[0]
    assert abs(rel.mean().item() - rel2.mean().item()) < 0.02


def test_mask_cache_reuses_tensor():
    frequency_masks.cache_clear()
    first = frequency_masks(24, 18, (3.0, 5.0), "absolute", torch.device("cpu"), torch.float32)
    again = frequency_masks(24, 18, (3.0, 5.0), "absolute", torch.device("cpu"), torch.float32)
    other = frequency_masks(24, 20, (3.0, 5.0), "absolute", torch.device("cpu"), torch.float32)
    assert first[0] is again[0] and first[1] is again[1]
    assert other[0] is not first[0]
    # the module looks its masks up in the same cache: two calls on one shape add one entry
    flm = FrequencyModule(2, (3.0, 5.0))
    before = frequency_masks.cache_info().currsize
    flm(torch.randn(1, 2, 10, 12))
    flm(torch.randn(3, 2, 10, 12))
    info = frequency_masks.cache_info()
    assert info.currsize == before + 1


# -- SLM ----------------------------------------------------------------------------------------------


def test_slm_is_one_matmul_over_masked_experts():
    """[B_1..B_n] @ concat(M_i * z) equals sum_i M_i * (B_i z)."""
    torch.manual_seed(0)
    slm = SpatialModule(d_in=6, rank=3, d_out=5, n_experts=3)
    nn.init.normal_(slm.experts.weight)
    x, z = torch.randn(2, 6, 4, 7), torch.randn(2, 3, 4, 7)
    out, masks = slm.forward_with_masks(z, x)
    assert masks.shape == (2, 3, 4, 7)
    torch.testing.assert_close(masks.sum(1), torch.ones(2, 4, 7))
    expected = sum(
        masks[:, i : i + 1] * torch.einsum("or,brhw->bohw", slm.experts.weight[:, 3 * i : 3 * i + 3], z)
        for i in range(3)
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("slm", "flm", "position"), SWITCHES)
def test_branch_added_inside_the_matmul_equals_the_plain_sum(
    slm, flm, position, memory_format, perturb_adapters
):
    """The layer adds the branch into W0 x in place (baddbmm); values and gradients match y + s * branch."""
    torch.manual_seed(0)
    base = nn.Conv2d(6, 5, 1)
    layer = FSLoRALayer(base, small_config(slm=slm, flm=flm, flm_position=position, alpha=2.0))
    perturb_adapters(layer)
    x = torch.randn(4, 6, 5, 7).contiguous(memory_format=memory_format)

    def run(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        layer.zero_grad()
        xg = x.clone().requires_grad_(True)
        if fused:
            out = layer(xg)
        else:
            branch = fslora.adapters.adapter.grouped_branch(
                [layer.adapters["det"], layer.adapters["reid"]], xg.unflatten(0, (2, -1))
            )
            out = base(xg) + layer.scaling * branch.delta.flatten(0, 1)
        random_loss(out).backward()
        grads = [xg.grad] + [p.grad for p in layer.adapters.parameters()]
        assert sum(g is not None for g in grads) > 1
        return out.detach(), [torch.zeros(()) if g is None else g.clone() for g in grads]

    assert layer._accumulates_in_place(base(x), layer.adapters["det"])
    fused_out, fused_grads = run(True)
    plain_out, plain_grads = run(False)
    torch.testing.assert_close(fused_out, plain_out, atol=1e-5, rtol=1e-5)
    for fused_grad, plain_grad in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(fused_grad, plain_grad, atol=1e-5, rtol=1e-5)


def test_adapter_init_matches_nn_linear_and_zero_up():
    adapter = FSLoRAAdapter(16, 12, 4, small_config())
    bound = (1 / 16) ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan_in 16
    assert adapter.lora_A.weight.abs().max() <= bound and adapter.lora_A.weight.std() > bound / 4
    assert torch.count_nonzero(adapter.lora_B.experts.weight) == 0
    assert torch.count_nonzero(adapter.flm.router.weight) == 0


# -- freezing and gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_only_adapters_train_and_w0_is_untouched(make_toy, perturb_adapters, layout):
    model = make_toy(layout)
    fslora.inject_fslora(model, small_config())
    perturb_adapters(model)
    layers = fslora.fslora_layers(model)
    for layer in layers.values():
        trainable = {id(p) for p in layer.parameters() if p.requires_grad}
        assert trainable == {id(p) for p in layer.adapters.parameters()}
    assert model.norm.weight.requires_grad  # not a target: left as the caller had it
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if ".base_layer." in n}
    adapter_before = {n: p.detach().clone() for n, p in model.named_parameters() if ".adapters." in n}

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    random_loss(model(fslora.stack_streams(model.example_input(), 2))).backward()
    for name, p in model.named_parameters():
        if ".base_layer." in name:
            assert p.grad is None, name
        elif ".adapters." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    for name, p in model.named_parameters():
        if name in base_before:
            assert torch.equal(p, base_before[name]), name
    after = dict(model.named_parameters())
    assert all(not torch.equal(after[n], before) for n, before in adapter_before.items())


def test_gradients_reach_up_projection_at_init(make_toy):
    """At init B = 0, so only B (and the norm) get gradient - the usual LoRA start."""
    model = make_toy()
    fslora.inject_fslora(model, small_config())
    random_loss(model(fslora.stack_streams(model.example_input(), 2))).backward()
    for name, p in model.named_parameters():
        if name.endswith("experts.weight"):
            assert p.grad.abs().sum() > 0, name
        elif ".adapters." in name:
            assert p.grad is None or p.grad.abs().sum() == 0, name


# -- routing capture ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["channel_last", "linear2d"])
def test_capture_routing_shapes_and_scope(make_toy, perturb_adapters, layout):
    model = make_toy(layout)
    fslora.inject_fslora(model, small_config(n_experts=3))
    perturb_adapters(model)
    x = fslora.stack_streams(model.example_input(batch=2, h=12, w=11), 2)
    with fslora.capture_routing(model) as rec:
        model(x)
    names = set(fslora.fslora_layers(model))
    assert set(rec.records) == names and len(names) == 8
    for per_task in rec.records.values():
        assert set(per_task) == {"det", "reid"}
        for record in per_task.values():
            assert record.expert_masks.shape == (2, 3, 12, 11)
            assert record.freq_weights.shape == (2, 2)
            assert not record.expert_masks.requires_grad
            torch.testing.assert_close(record.expert_masks.sum(1), torch.ones(2, 12, 11))
            torch.testing.assert_close(record.freq_weights.sum(1), torch.ones(2))
    # the two tasks route differently once their adapters differ
    some = rec.records["layers.0.in_proj"]
    assert not torch.allclose(some["det"].expert_masks, some["reid"].expert_masks)
    # outside the context nothing is recorded or kept
    snapshot = {k: dict(v) for k, v in rec.records.items()}
    model(x)
    assert rec.records == snapshot
    assert all(layer.routing_recorder is None for layer in fslora.fslora_layers(model).values())
    with fslora.capture_routing(model) as empty:
        pass
    model(x)
    assert empty.records == {}


def test_capture_routing_without_slm_or_flm(make_toy):
    model = make_toy()
    fslora.inject_fslora(model, small_config(slm=False, flm=False, tasks=("det",)))
    with fslora.capture_routing(model, to_cpu=True) as rec:
        model(model.example_input(batch=3, h=5, w=6))
    record = rec.records["layers.1.mlp.fc2"]["det"]
    assert torch.equal(record.expert_masks, torch.ones(3, 1, 5, 6))
    assert record.freq_weights is None


# -- ablation variants and parameter counts -----------------------------------------------------------


def _expected_adapter_params(d_in, d_out, r, n, slm, flm, position):
    count = r * d_in  # A
    count += (n * d_in + n * r * d_out) if slm else r * d_out  # router + experts, or a single B
    if flm:
        count += 2 * {"between": r, "before": d_in, "after": d_out}[position] + 2  # W_f, b_f
    return count


@pytest.mark.parametrize(("slm", "flm", "position"), SWITCHES)
def test_variants_have_expected_modules_and_counts(slm, flm, position):
    layer = FSLoRALayer(nn.Linear(8, 12), small_config(slm=slm, flm=flm, flm_position=position))
    for task in ("det", "reid"):
        adapter = layer.adapters[task]
        assert isinstance(adapter.lora_A, nn.Linear) and adapter.lora_A.weight.shape == (4, 8)
        assert (adapter.flm is not None) == flm
        assert (adapter.lora_B.router is not None) == slm
        assert adapter.lora_B.experts.weight.shape == (12, (2 if slm else 1) * 4)
    counts = fslora.count_parameters(layer)
    per_task = _expected_adapter_params(8, 12, 4, 2, slm, flm, position)
    assert counts["adapter"] == 2 * per_task
    assert counts["trainable"] == counts["adapter"]
    assert counts["total"] == counts["adapter"] + 8 * 12 + 12
    assert counts["adapter_fraction"] == pytest.approx(2 * per_task / (8 * 12 + 12))


def test_scaling_is_alpha_over_rank(make_toy, perturb_adapters):
    layer = FSLoRALayer(nn.Linear(8, 8), small_config(alpha=2.0, flm=False, tasks=("det",)))
    perturb_adapters(layer)
    x = torch.randn(2, 5, 5, 8)
    branch = layer.adapters["det"](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert layer.scaling == 0.5
    torch.testing.assert_close(layer(x), layer.base_layer(x) + 0.5 * branch)


# -- injection ----------------------------------------------------------------------------------------


def test_rank_pattern_overrides_rank(make_toy):
    model = make_toy(depth=3)
    cfg = small_config(r=4, alpha=8.0, rank_pattern={r"layers\.1\.": 2, r"fc2$": 6})
    fslora.inject_fslora(model, cfg)
    ranks = {n: layer.rank for n, layer in fslora.fslora_layers(model).items()}
    assert ranks["layers.1.in_proj"] == 2 and ranks["layers.1.mlp.fc2"] == 2  # first pattern wins
    assert ranks["layers.0.mlp.fc2"] == 6 and ranks["layers.2.mlp.fc2"] == 6
    assert ranks["layers.0.in_proj"] == 4 and ranks["layers.2.mlp.fc1"] == 4
    layer = model.layers[1].in_proj
    assert layer.adapters["det"].lora_A.weight.shape == (2, 8) and layer.scaling == 4.0


def test_target_modules_list_suffix_regex_and_no_match(make_toy):
    targets = lambda cfg: sorted(fslora.find_targets(make_toy(), cfg))  # noqa: E731
    by_list = targets(small_config(target_modules=["mlp.fc1", "layers.1.in_proj"]))
    assert by_list == ["layers.0.mlp.fc1", "layers.1.in_proj", "layers.1.mlp.fc1"]
    assert targets(small_config(target_modules=["c1"])) == []  # suffixes are whole dotted names
    by_regex = targets(small_config(target_modules=r"layers\.0\.(in|out)_proj"))
    assert by_regex == ["layers.0.in_proj", "layers.0.out_proj"]
    assert targets(small_config(target_modules=r"proj")) == []  # a regex must match the whole name

    model = make_toy()
    with pytest.raises(ValueError, match="target_modules"):
        fslora.inject_fslora(model, small_config(target_modules=["fc3"]))
    fslora.inject_fslora(model, small_config())
    assert len(fslora.fslora_layers(model)) == 8
    with pytest.raises(ValueError, match="matched no module"):  # injecting twice wraps nothing new
        fslora.inject_fslora(model, small_config())


def test_unsupported_target_types_name_the_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU())
    with pytest.raises(ValueError, match="'0'.*1x1 Conv2d"):
        fslora.inject_fslora(model, small_config(target_modules=["0"]))
    with pytest.raises(ValueError, match="'1'.*GELU"):
        fslora.inject_fslora(model, small_config(target_modules=["1"]))


def test_injection_keeps_device_dtype_and_layer_behaviour():
    base = nn.Linear(8, 8).to(torch.float64)
    layer = FSLoRALayer(base, small_config())
    assert all(p.dtype == torch.float64 for p in layer.adapters.parameters())
    assert layer.base_layer is base
    with pytest.raises(ValueError, match="equal task chunks"):
        layer(torch.randn(3, 4, 4, 8, dtype=torch.float64))


@pytest.mark.parametrize(("slm", "flm"), list(itertools.product([False, True], repeat=2)))
def test_dropout_only_changes_training_mode(slm, flm, perturb_adapters):
    layer = FSLoRALayer(nn.Linear(8, 8), small_config(dropout=0.5, slm=slm, flm=flm, tasks=("det",)))
    perturb_adapters(layer)
    x = torch.randn(2, 6, 6, 8)
    layer.eval()
    deterministic = layer(x)
    assert torch.equal(layer(x), deterministic)
    layer.train()
    torch.manual_seed(0)
    assert not torch.allclose(layer(x), deterministic)
