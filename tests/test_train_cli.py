"""End to end from the command line: train a few steps on a tiny SynthPS split, stop, resume, evaluate.

`python -m fslora.train --config configs/train/tiny_test.yaml` runs 2 of its 4 steps (``--max-steps``),
then ``--resume`` finishes the epoch (evaluation, plots, final model); an in-process uninterrupted run of
the same config must log exactly the same batches and losses. `python -m fslora.evaluate` on the result
writes the protocol's figures. CPU, nano model, 96x160 input: well under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fslora.evaluate import main as evaluate_main
from fslora.models import FSLoRAPersonSearch
from fslora.train import main as train_main
from fslora.training.config import TrainConfig
from fslora.training.loop import Trainer
from fslora.training.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "train" / "tiny_test.yaml"
STEPS = 4  # 8 tiny training images, batch 2


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module")
def run(split_root, tmp_path_factory) -> Path:
    """The interrupted (2 steps) then resumed run."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    first = run_cli(
        "fslora.train",
        "--config",
        str(CONFIG),
        "--out",
        str(out),
        "--set",
        f"data.root={split_root}",
        "--max-steps",
        "2",
        "--no-progress",
    )
    assert first.returncode == 0, first.stderr
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == [1, 2]
    assert (out / "checkpoints" / "step-00000002" / "trainer_state.json").is_file()
    assert not (out / "final").exists()
    second = run_cli("fslora.train", "--out", str(out), "--resume", "--no-progress")
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stderr and "step-00000002" in second.stderr
    return out


def test_resume_continues_at_the_right_step_without_duplicates(run):
    records = read_metrics(run / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, STEPS + 1))
    for r in records:
        if r["kind"] == "step":
            assert r["lr"] > 0 and r["loss"] > 0 and "loss_oim" in r and r["grad_norm"] >= 0
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 1 and evals[0]["epoch"] == 1 and evals[0]["step"] == STEPS
    # every training image is seen exactly once in the epoch, across the interruption
    seen = sorted(i for r in records if r["kind"] == "step" for i in r["images"])
    assert seen == list(range(8))


def test_resumed_run_matches_an_uninterrupted_run(run, split_root, tmp_path, torch_single_thread):
    config = TrainConfig.from_yaml(
        CONFIG, [f"data.root={split_root}", "plots.enabled=false", "eval.at_end=false"]
    )
    summary = Trainer(config, tmp_path / "straight", progress=False).fit()
    assert summary["step"] == STEPS
    straight = [r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if r["kind"] == "step"]
    resumed = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "step"]
    assert [r["images"] for r in resumed] == [r["images"] for r in straight], "same batch order"
    for a, b in zip(resumed, straight, strict=True):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), a["step"]


def test_run_folder_has_config_checkpoints_plots_and_final_model(run):
    saved = TrainConfig.from_yaml(run / "config.yaml")
    assert saved.model.oim.num_ids == 6  # set from the tiny split's training identities
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-00000002", "step-00000004"]
    for name in ("losses.png", "frequency_weights.png", "expert_masks.png"):
        png = run / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    card = (run / "final" / "README.md").read_text()
    assert "--max-steps 2" in card and "--resume" in card, "the model card records the exact commands"
    assert "| mAP |" in card
    model = FSLoRAPersonSearch.from_pretrained(run / "final", device="cpu")
    assert model.config.name == saved.model.name
    assert model.config.oim.num_ids == 6


def test_a_fresh_start_into_an_existing_run_is_refused(run, split_root, capsys):
    code = train_main(["--config", str(CONFIG), "--out", str(run), "--set", f"data.root={split_root}"])
    assert code == 2 and "--resume" in capsys.readouterr().err
    assert len(read_metrics(run / "metrics.jsonl")) == STEPS + 1, "the existing run is left alone"


def test_evaluate_cli_writes_every_figure(run, split_root, tmp_path):
    out = tmp_path / "eval.json"
    result = run_cli(
        "fslora.evaluate",
        "--checkpoint",
        str(run / "final"),
        "--dataset",
        "synthps",
        "--root",
        str(split_root),
        "--json",
        str(out),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert "mAP" in result.stdout and "det_recall" in result.stdout
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    for key in ("mAP", "top1", "top5", "top10", "det_ap", "det_recall"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["num_queries"] + metrics["num_queries_without_gt"] == 6  # the tiny split's queries
    assert report["gallery_images"] == 12 and report["dataset"] == "synthps"
    per_query = report["per_query"]
    assert len(per_query) == metrics["num_queries"]
    assert np.mean([q["ap"] for q in per_query]) == pytest.approx(metrics["mAP"])
    # the report is a valid input of the paired comparison: against itself every difference is zero
    compared = run_cli("fslora.compare", str(out), str(out), "--resamples", "200")
    assert compared.returncode == 0, compared.stderr
    assert "+0.00 [ +0.00,  +0.00]" in compared.stdout


def test_evaluate_exits_2_for_missing_or_misfit_inputs(run, split_root, tmp_path, capsys):
    cases = [
        (
            ["--checkpoint", str(tmp_path / "none"), "--dataset", "synthps", "--root", str(split_root)],
            "--checkpoint",
        ),
        (["--checkpoint", str(run), "--dataset", "prw", "--root", str(tmp_path / "no-prw")], "no-prw"),
        (
            [
                "--checkpoint",
                str(run),
                "--dataset",
                "synthps",
                "--root",
                str(split_root),
                "--gallery-size",
                "50",
            ],
            "--gallery-size",
        ),
        (
            ["--checkpoint", str(tmp_path), "--dataset", "synthps", "--root", str(split_root)],
            "neither a checkpoint",
        ),
    ]
    for argv, message in cases:
        assert evaluate_main(argv) == 2, argv
        assert message in capsys.readouterr().err
