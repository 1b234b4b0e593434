"""Training checkpoints (exact state round trip) and initialising a model from an earlier run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fslora.models import FSLoRAPersonSearch, PersonSearchConfig
from fslora.training.checkpoint import (
    Progress,
    init_weights_from,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from fslora.training.metrics_log import MetricsLog
from fslora.training.schedule import build_scheduler


def small_config(use_adapters: bool = True, num_ids: int = 5, **model) -> PersonSearchConfig:
    return PersonSearchConfig.from_dict(
        {
            "name": "ckpt-test",
            "backbone": "nano",
            "use_adapters": use_adapters,
            "adapters": {"r": 4, "alpha": 4, "cutoff_mode": "relative", "cutoffs": [0.3, 0.4]},
            "transform": {"min_size": 64, "max_size": 96},
            "oim": {"num_ids": num_ids, "queue_size": 8},
            **model,
        }
    )


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_init_from_a_pretraining_run_loads_the_backbone_as_frozen_w0(tmp_path):
    torch.manual_seed(0)
    pretrained = FSLoRAPersonSearch(small_config(use_adapters=False, num_ids=7))
    _perturb(pretrained, 1)  # stands for the pretraining
    pretrained.save_pretrained(tmp_path / "run" / "final")

    torch.manual_seed(1)
    model = FSLoRAPersonSearch(small_config(num_ids=3))  # other identities: OIM tables are not taken
    adapters_before = {k: v.clone() for k, v in model.state_dict().items() if ".adapters." in k}
    summary = init_weights_from(model, tmp_path / "run", heads=True)  # a run folder -> its final/
    assert "backbone" in summary and "head" in summary

    ours = model.state_dict()
    for key, value in pretrained.backbone.state_dict().items():
        wrapped = key.rsplit(".", 1)[0] + ".base_layer." + key.rsplit(".", 1)[1]
        target = ours.get(f"backbone.{key}", ours.get(f"backbone.{wrapped}"))
        assert target is not None, key
        assert torch.equal(target, value), key
    for key, value in pretrained.head.state_dict().items():
        if ".oim." not in key and not key.startswith("oim."):
            assert torch.equal(ours[f"head.{key}"], value), key
    for key, value in adapters_before.items():
        assert torch.equal(ours[key], value), f"{key}: adapters must start fresh"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("backbone.") and ".adapters." not in n for n in trainable), (
        "W0 must stay frozen"
    )


def test_init_from_a_mismatched_backbone_names_the_key(tmp_path):
    other = FSLoRAPersonSearch(small_config(use_adapters=False, backbone={"preset": "nano", "dims": 48}))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="shape"):
        init_weights_from(FSLoRAPersonSearch(small_config()), tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="nothing"):
        init_weights_from(FSLoRAPersonSearch(small_config()), tmp_path / "nothing")


def test_checkpoint_round_trip_restores_every_state(tmp_path):
    torch.manual_seed(0)
    model = FSLoRAPersonSearch(small_config())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = build_scheduler(
        opt, steps_per_epoch=3, warmup_steps=2, warmup_factor=0.1, milestones=[1], gamma=0.1
    )
    for _ in range(2):  # momentum buffers exist after a step
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
    with torch.no_grad():
        model.head.oim.lut[0] = 1.0  # training buffers travel too
    np.random.seed(5)
    path = save_checkpoint(tmp_path / "ckpts", model, opt, sched, Progress(epoch=0, step=2, batch=2))
    expected_rand, expected_np = torch.rand(3), np.random.rand(2)
    expected_state = {k: v.clone() for k, v in model.state_dict().items()}
    expected_opt = opt.state_dict()
    assert json.loads((path / "config.json").read_text())["name"] == "ckpt-test"

    torch.manual_seed(123)
    model2 = FSLoRAPersonSearch(small_config())
    params2 = [p for p in model2.parameters() if p.requires_grad]
    opt2 = torch.optim.SGD(params2, lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched2 = build_scheduler(
        opt2, steps_per_epoch=3, warmup_steps=2, warmup_factor=0.1, milestones=[1], gamma=0.1
    )
    progress = load_checkpoint(path, model2, opt2, sched2)
    assert progress == Progress(epoch=0, step=2, batch=2)
    assert torch.equal(torch.rand(3), expected_rand), "torch RNG state must be restored"
    assert np.array_equal(np.random.rand(2), expected_np), "numpy RNG state must be restored"
    for k, v in model2.state_dict().items():
        assert torch.equal(v, expected_state[k]), k
    got = opt2.state_dict()
    assert got["param_groups"] == expected_opt["param_groups"]
    for i, st in expected_opt["state"].items():
        assert torch.equal(got["state"][i]["momentum_buffer"], st["momentum_buffer"])
    assert sched2.state_dict()["last_epoch"] == 2 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_only_the_newest_checkpoints_are_kept_and_partial_ones_ignored(tmp_path):
    model = FSLoRAPersonSearch(small_config())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = build_scheduler(
        opt, steps_per_epoch=1, warmup_steps=0, warmup_factor=1.0, milestones=[], gamma=0.1
    )
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model, opt, sched, Progress(step=step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    (tmp_path / "step-00000009.tmp").mkdir()  # a crash mid-save
    (tmp_path / "step-00000010").mkdir()  # no trainer_state.json: incomplete
    assert latest_checkpoint(tmp_path).name == "step-00000003"


def test_resume_drops_log_records_written_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        log.write({"kind": "step", "step": step, "loss": 1.0 / step})
        if step in (2, 4):
            log.write({"kind": "eval", "epoch": step // 2, "step": step, "mAP": float("nan")})
    with log.path.open("a") as f:
        f.write('{"kind": "step", "st')  # torn line of a crash
    assert log.truncate(step=3, epoch=1) == 3
    records = log.read()
    assert [(r["kind"], r["step"]) for r in records] == [("step", 1), ("step", 2), ("eval", 2), ("step", 3)]
    assert records[2]["mAP"] is None  # NaN is written as null: the file stays valid JSON
