"""The tools that make the bundled checkpoint and the ablation table: `fslora.publish`, `fslora.ablation`.

Both run for real on a tiny SynthPS split with the tiny test config (nano model, 96x160, 4 steps):
the ablation runner trains and evaluates two rows in parallel subprocesses, and the publisher re-saves a
finished run with its evaluation in the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fslora.ablation import main as ablation_main
from fslora.models import FSLoRAPersonSearch
from fslora.models.checkpoint import inference_state_dict
from fslora.publish import main as publish_main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "train" / "tiny_test.yaml"


@pytest.fixture(scope="module")
def ablation(split_root, tmp_path_factory) -> Path:
    """Two rows (plain LoRA, FSLoRA) of a tiny ablation, trained and evaluated by the runner."""
    folder = tmp_path_factory.mktemp("ablation")
    configs = folder / "configs"
    configs.mkdir()
    for row, switches in {"lora": {"slm": False, "flm": False}, "fslora": {"slm": True, "flm": True}}.items():
        row_config = {
            "base": str(TINY),
            "name": f"tiny-{row}",
            "model": {"adapters": switches},
            "data": {"root": str(split_root)},
            "eval": {"every": 0, "at_end": False},
            "plots": {"enabled": False},
        }
        (configs / f"nano_synthps_{row}.yaml").write_text(yaml.safe_dump(row_config))
    code = ablation_main(
        [
            "--eval-root", str(split_root), "--rows", "lora", "fslora", "--out", str(folder / "runs"),
            "--config-dir", str(configs), "--jobs", "2", "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0, (folder / "runs").glob("*.log")
    return folder / "runs"


def test_ablation_trains_evaluates_and_tabulates_every_row(ablation):
    results = json.loads((ablation / "ablation.json").read_text())
    assert [r["row"] for r in results] == ["lora", "fslora"]
    for r in results:
        assert (ablation / r["row"] / "final" / "model.safetensors").is_file()
        assert 0.0 <= r["metrics"]["mAP"] <= 1.0 and 0.0 <= r["metrics"]["det_recall"] <= 1.0
        assert r["metrics"]["num_queries"] + r["metrics"]["num_queries_without_gt"] == 6
    lora, fslora = results
    assert fslora["params_trainable"] > lora["params_trainable"] > 0, "routers and experts add parameters"
    table = (ablation / "ablation.md").read_text()
    assert "| LoRA (one per task) |" in table and "| FSLoRA (SLM + FLM) | x | x |" in table
    assert f"{100 * fslora['metrics']['mAP']:.1f}" in table
    # without a baseline row the first row is the reference of the paired comparison
    paired = fslora["vs_reference"]
    assert paired["row"] == "lora" and "vs_reference" not in lora
    assert paired["mAP"]["difference"] == pytest.approx(fslora["metrics"]["mAP"] - lora["metrics"]["mAP"])
    assert paired["mAP"]["ci_low"] <= paired["mAP"]["difference"] <= paired["mAP"]["ci_high"]
    assert paired["top1"]["difference"] == pytest.approx(fslora["metrics"]["top1"] - lora["metrics"]["top1"])
    assert "mAP - lora [95 % CI]" in table and "| (reference) |" in table


def test_ablation_rerun_reuses_finished_rows(ablation, split_root):
    before = {p: p.stat().st_mtime_ns for p in ablation.glob("*/metrics.jsonl")}
    code = ablation_main(
        [
            "--eval-root", str(split_root), "--rows", "lora", "fslora", "--out", str(ablation),
            "--config-dir", str(ablation.parent / "configs"), "--jobs", "1",
        ]
    )  # fmt: skip
    assert code == 0
    assert {p: p.stat().st_mtime_ns for p in ablation.glob("*/metrics.jsonl")} == before, "nothing retrained"


def test_ablation_refuses_missing_inputs(tmp_path, capsys):
    assert ablation_main(["--eval-root", str(tmp_path / "none")]) == 2
    assert "--eval-root" in capsys.readouterr().err
    assert ablation_main(["--eval-root", str(tmp_path), "--config-dir", str(tmp_path), "--rows", "slm"]) == 2
    assert "nano_synthps_slm.yaml" in capsys.readouterr().err


def test_publish_writes_weights_and_a_card_with_the_evaluation(ablation, tmp_path):
    run = ablation / "fslora"
    out = tmp_path / "weights" / "fslora-tiny"
    code = publish_main(["--run", str(run), "--eval", str(run / "eval.json"), "--out", str(out)])
    assert code == 0
    report = json.loads((run / "eval.json").read_text())
    card = (out / "README.md").read_text()
    assert f"| mAP | {report['metrics']['mAP']:.4g} |" in card
    assert "fslora.train" in card and str(report["root"]) in card, "commands and the evaluated split"
    assert json.loads((out / "eval.json").read_text()) == report
    published = inference_state_dict(FSLoRAPersonSearch.from_pretrained(out, device="cpu"))
    trained = inference_state_dict(FSLoRAPersonSearch.from_pretrained(run / "final", device="cpu"))
    assert published.keys() == trained.keys()
    assert all(torch.equal(published[k], trained[k]) for k in trained)


def test_publish_over_the_size_cap_keeps_the_old_release(ablation, tmp_path, capsys):
    run = ablation / "fslora"
    out = tmp_path / "release"
    out.mkdir()
    (out / "keep.txt").write_text("old release")
    code = publish_main(
        ["--run", str(run), "--eval", str(run / "eval.json"), "--out", str(out), "--max-mb", "0.001"]
    )
    assert code == 2 and "--max-mb" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "old release"
    assert publish_main(["--run", str(tmp_path), "--eval", str(run / "eval.json"), "--out", str(out)]) == 2
    assert "no finished model" in capsys.readouterr().err
