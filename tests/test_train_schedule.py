"""The learning-rate schedule: linear warm-up, then x gamma at each milestone epoch, stepped per step."""

from __future__ import annotations

import pytest
import torch

from fslora.training.schedule import build_scheduler, lr_factor


def _lrs(steps: int, **kwargs) -> list[float]:
    """The lr used by each of ``steps`` optimizer steps under `build_scheduler`."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.003, momentum=0.9)
    sched = build_scheduler(opt, **kwargs)
    used = []
    for _ in range(steps):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return used


def test_warmup_is_linear_then_flat_then_decays_at_the_milestone():
    # 10 steps per epoch, warm-up over 5 steps from 0.001 x lr, x0.1 from epoch 3 (step 30)
    lrs = _lrs(40, steps_per_epoch=10, warmup_steps=5, warmup_factor=0.001, milestones=[3], gamma=0.1)
    base = 0.003
    assert lrs[0] == pytest.approx(base * 0.001)
    expected_warmup = [base * (0.001 + 0.999 * k / 5) for k in range(5)]
    assert lrs[:5] == pytest.approx(expected_warmup)
    assert all(b > a for a, b in zip(lrs[:5], lrs[1:6], strict=True)), "warm-up must increase"
    assert lrs[5:30] == pytest.approx([base] * 25)
    assert lrs[30:] == pytest.approx([base * 0.1] * 10)


def test_two_milestones_compound():
    lrs = _lrs(7, steps_per_epoch=2, warmup_steps=0, warmup_factor=0.5, milestones=[1, 2], gamma=0.1)
    assert lrs == pytest.approx([0.003, 0.003, 0.0003, 0.0003, 0.00003, 0.00003, 0.00003])


def test_paper_schedule_factor_at_epoch_boundaries():
    spe = 2241  # CUHK-SYSU: 11206 images / batch 5
    f = lambda step: lr_factor(
        step, warmup_steps=1000, warmup_factor=0.001, milestone_steps=[16 * spe], gamma=0.1
    )
    assert f(0) == pytest.approx(0.001)
    assert f(500) == pytest.approx(0.001 + 0.999 * 0.5)
    assert f(1000) == 1.0
    assert f(16 * spe - 1) == 1.0  # last step of epoch index 15
    assert f(16 * spe) == pytest.approx(0.1)  # first step of epoch index 16 (the 17th epoch)
    assert f(22 * spe - 1) == pytest.approx(0.1)


def test_scheduler_state_restores_the_same_lrs():
    kwargs = dict(steps_per_epoch=4, warmup_steps=3, warmup_factor=0.01, milestones=[2], gamma=0.1)
    reference = _lrs(12, **kwargs)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.003)
    sched = build_scheduler(opt, **kwargs)
    for _ in range(5):
        opt.step()
        sched.step()
    state, opt_state = sched.state_dict(), opt.state_dict()
    # a fresh optimizer / scheduler pair, as a resumed run builds them
    param2 = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([param2], lr=0.003)
    sched2 = build_scheduler(opt2, **kwargs)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    rest = []
    for _ in range(7):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert rest == pytest.approx(reference[5:])


def test_bad_steps_per_epoch_is_rejected():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_scheduler(opt, steps_per_epoch=0, warmup_steps=0, warmup_factor=0.1, milestones=[], gamma=0.1)
