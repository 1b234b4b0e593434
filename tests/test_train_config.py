"""TrainConfig: YAML with `base:` inheritance, model paths, `--set` overrides, and errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fslora.train import main as train_main
from fslora.training.config import TrainConfig, apply_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path):
    config = TrainConfig.from_yaml(path)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.model.backbone.num_classes == 0


def test_paper_configs_hold_the_paper_recipe():
    for name, dataset in (
        ("paper_vmamba_tiny_cuhk.yaml", "cuhk-sysu"),
        ("paper_vmamba_tiny_prw.yaml", "prw"),
    ):
        c = TrainConfig.from_yaml(CONFIGS / name)
        assert c.data.dataset == dataset
        assert (c.model.transform.min_size, c.model.transform.max_size) == (900, 1500)
        assert (c.batch_size, c.epochs, c.optim.lr, c.optim.momentum) == (5, 22, 0.003, 0.9)
        assert (c.optim.weight_decay, c.optim.milestones, c.optim.gamma, c.optim.grad_clip) == (
            5e-4,
            (16,),
            0.1,
            10.0,
        )
        assert c.optim.warmup_steps > 0
        assert c.model.backbone.dims[0] == 96 and c.model.adapters.r == 32


def test_ablation_rows_differ_only_in_adapter_switches():
    rows = {
        n: TrainConfig.from_yaml(CONFIGS / f"nano_synthps_{n}.yaml")
        for n in ("baseline", "lora", "slm", "flm", "fslora")
    }
    switches = {
        n: (c.model.use_adapters, c.model.adapters.slm, c.model.adapters.flm) for n, c in rows.items()
    }
    assert switches == {
        "baseline": (False, True, True),  # no adapters at all
        "lora": (True, False, False),
        "slm": (True, True, False),
        "flm": (True, False, True),
        "fslora": (True, True, True),
    }

    def rest(c: TrainConfig) -> dict:
        d = c.to_dict()
        d.pop("name")
        d["model"] = {k: v for k, v in d["model"].items() if k not in ("name", "use_adapters", "adapters")}
        return d

    reference = rest(rows["fslora"])
    assert all(rest(c) == reference for c in rows.values())


def test_base_inheritance_and_model_path(tmp_path):
    base = _write(
        tmp_path / "base.yaml",
        {
            "name": "a",
            "epochs": 3,
            "optim": {"lr": 0.01, "milestones": [2]},
            "model": "configs/models/nano.yaml",
        },
    )
    child = _write(tmp_path / "child.yaml", {"base": "base.yaml", "name": "b", "optim": {"lr": 0.02}})
    c = TrainConfig.from_yaml(child)
    assert (c.name, c.epochs, c.optim.lr, c.optim.milestones) == ("b", 3, 0.02, (2,))
    assert c.model.backbone.dims[0] == 32  # the nano model file, found from the repository root
    assert TrainConfig.from_yaml(base).optim.lr == 0.01


def test_set_overrides_reach_nested_and_model_fields(tmp_path):
    path = _write(tmp_path / "c.yaml", {"model": "configs/models/nano.yaml", "optim": {"milestones": []}})
    c = TrainConfig.from_yaml(
        path, ["optim.lr=0.5", "model.adapters.r=4", "data.hflip=0", "eval.max_queries=null"]
    )
    assert c.optim.lr == 0.5 and c.model.adapters.r == 4 and c.data.hflip == 0 and c.eval.max_queries is None
    assert c.model.transform.min_size == 384  # the rest of the model file is kept
    raw: dict = {}
    apply_overrides(raw, ["a.b.c=[1, 2]"])
    assert raw == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides({}, ["optim.lr"])


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"optim": {"lrr": 0.1}}, "lrr"),
        ({"optim": {"name": "adam"}}, "optim.name"),
        ({"data": {"dataset": "market1501"}}, "data.dataset"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": "many"}, "epochs"),
        ({"optim": {"milestones": [8, 4]}}, "optim.milestones"),
        ({"data": {"hflip": 2}}, "data.hflip"),
        ({"data": {"train_images": 0}}, "data.train_images"),
        ({"model": {"base": "configs/models/nano.yaml", "rpn": {"nms_thresh": 3}}}, "rpn.nms_thresh"),
        ({"model": "configs/models/missing.yaml"}, "model.base"),
        ({"init_heads": True}, "init_heads"),
        ({"eval": {"multi_view": True}, "data": {"dataset": "cuhk-sysu"}}, "multi_view"),
    ],
)
def test_bad_values_name_the_field(tmp_path, data, field):
    path = _write(tmp_path / "bad.yaml", data)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        TrainConfig.from_yaml(path)


def test_cli_exits_2_naming_the_bad_field(tmp_path, capsys):
    path = _write(tmp_path / "bad.yaml", {"optim": {"momentum": 1.5}})
    assert train_main(["--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "optim.momentum" in err and "bad.yaml" in err
    assert not (tmp_path / "run").exists()
    # a bad --set value is named too
    assert train_main(["--config", str(CONFIGS / "tiny_test.yaml"), "--set", "optim.gamma=7"]) == 2
    assert "optim.gamma" in capsys.readouterr().err


def test_cli_exits_2_for_a_missing_config_or_run(tmp_path, capsys):
    assert train_main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert train_main(["--out", str(tmp_path / "norun"), "--resume"]) == 2
    assert "config.yaml not found" in capsys.readouterr().err
    assert train_main([]) == 2
    assert "--config is required" in capsys.readouterr().err
