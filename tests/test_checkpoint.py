"""save_pretrained / from_pretrained: bit-identical round trips, the Hub cache layout offline, and
clear errors for truncated weights, bad configs, mismatched tensors and pickles."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fslora.models import FSLoRAPersonSearch, PersonSearchConfig

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def config() -> PersonSearchConfig:
    return PersonSearchConfig.from_dict(
        {
            "name": "checkpoint-test",
            "backbone": "nano",
            "adapters": {"r": 4, "alpha": 4, "cutoff_mode": "relative", "cutoffs": [0.3, 0.4]},
            "transform": {"min_size": 64, "max_size": 96},
            "rpn": {"anchor_sizes": [16, 32, 64], "post_nms_top_n_test": 16},
            "roi": {"output_size": 8},
            "oim": {"num_ids": 7, "queue_size": 4},
        }
    )


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (64, 96, 3), dtype=np.uint8),
        rng.integers(0, 256, (50, 80, 3), dtype=np.uint8),
    ]


def randomise(model: FSLoRAPersonSearch, seed: int) -> None:
    """Random values everywhere (adapters start at zero, BN stats at identity), so loading matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith(".lut"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))


def outputs(model: FSLoRAPersonSearch) -> list[tuple[torch.Tensor, ...]]:
    return [(d.boxes, d.scores, d.embeddings) for d in model.detect(images(), score_thresh=0.0)]


def identical(a, b) -> bool:
    return all(torch.equal(x, y) for pa, pb in zip(a, b, strict=True) for x, y in zip(pa, pb, strict=True))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, list]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = FSLoRAPersonSearch(config()).eval()
        randomise(model, seed=1)
        folder = model.save_pretrained(
            tmp_path_factory.mktemp("ckpt") / "model",
            metrics={"mAP": 0.4321, "top-1": 0.75},
            training_data="SynthPS standard (seed 0)",
        )
        yield folder, outputs(model)
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def copy_of(saved, tmp_path):
    """A writable copy of the saved checkpoint folder."""
    folder = tmp_path / "copy"
    shutil.copytree(saved[0], folder)
    return folder


def test_round_trip_is_bit_identical(saved, torch_single_thread):
    folder, expected = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = FSLoRAPersonSearch.from_pretrained(folder, device="cpu")
    assert not loaded.training
    assert identical(outputs(loaded), expected)
    torch.manual_seed(5)
    assert not identical(outputs(FSLoRAPersonSearch(config()).eval()), expected), "loading must matter"


def test_checkpoint_holds_no_oim_training_state(saved):
    folder, _ = saved
    keys = set(load_file(str(folder / "model.safetensors")))
    assert not any(".oim." in k for k in keys)
    assert any(".adapters." in k for k in keys) and any(k.startswith("head.rpn.") for k in keys)
    assert "head.oim.lut" in FSLoRAPersonSearch(config()).state_dict()  # training checkpoints keep it
    data = json.loads((folder / "config.json").read_text())
    assert data["architecture_version"] == 1 and data["oim"]["num_ids"] == 7


def test_model_card_has_architecture_data_metrics_and_parameter_counts(saved):
    folder, _ = saved
    card = (folder / "README.md").read_text()
    counts = FSLoRAPersonSearch(config()).parameter_counts()
    assert card.startswith("---\n") and "# checkpoint-test" in card
    assert f"{counts['total']:,}" in card and f"{counts['adapter']:,}" in card
    assert "| mAP | 0.4321 |" in card and "SynthPS standard (seed 0)" in card
    assert "VMamba" in card and "r=4" in card


def test_loads_by_repo_id_from_a_hub_cache_offline(saved, tmp_path, monkeypatch, torch_single_thread):
    folder, expected = saved
    repo = tmp_path / "hub" / "models--org--fslora-nano"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = FSLoRAPersonSearch.from_pretrained("org/fslora-nano", device="cpu")
    assert identical(outputs(loaded), expected)
    by_commit = FSLoRAPersonSearch.from_pretrained("org/fslora-nano", revision=COMMIT, device="cpu")
    assert identical(outputs(by_commit), expected)
    with pytest.raises(FileNotFoundError, match="v9"):
        FSLoRAPersonSearch.from_pretrained("org/fslora-nano", revision="v9")
    with pytest.raises(FileNotFoundError, match="org/other"):
        FSLoRAPersonSearch.from_pretrained("org/other")


def test_truncated_safetensors_is_named(copy_of):
    weights = copy_of / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors.*truncated or corrupt"):
        FSLoRAPersonSearch.from_pretrained(copy_of)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(architecture_version=2), "architecture_version 2"),
        (lambda d: d.update(architecture="ResNetPS"), "unknown architecture 'ResNetPS'"),
        (lambda d: d["rpn"].update(colour="red"), "colour"),
        (lambda d: d["roi"].update(nms_thresh=-1), "roi.nms_thresh"),
    ],
)
def test_wrong_config_is_named(copy_of, edit, message):
    file = copy_of / "config.json"
    data = json.loads(file.read_text())
    edit(data)
    file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as info:
        FSLoRAPersonSearch.from_pretrained(copy_of)
    assert "config.json" in str(info.value)


def test_config_that_is_not_json(copy_of):
    (copy_of / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        FSLoRAPersonSearch.from_pretrained(copy_of)


def test_missing_and_misshaped_tensors_are_named(copy_of):
    weights = copy_of / "model.safetensors"
    tensors = load_file(str(weights))
    dropped = "head.box_predictor.weight"
    del tensors[dropped]
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match=f"missing keys.*{dropped}"):
        FSLoRAPersonSearch.from_pretrained(copy_of)
    file = copy_of / "config.json"
    data = json.loads(file.read_text())
    data["embedding_dim"] = 128  # the weights were written for 256
    file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="wrong shapes.*head.embedding"):
        FSLoRAPersonSearch.from_pretrained(copy_of)


class _Trap:
    """Unpickling this creates a marker file: proof that nothing was unpickled when it is absent."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_only_folder_is_refused_without_unpickling(copy_of, tmp_path):
    os.remove(copy_of / "model.safetensors")
    marker = tmp_path / "unpickled"
    (copy_of / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(ValueError, match="refusing to unpickle pytorch_model.bin"):
        FSLoRAPersonSearch.from_pretrained(copy_of)
    assert not marker.exists()


def test_bad_locations(saved, tmp_path):
    folder, _ = saved
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        FSLoRAPersonSearch.from_pretrained(tmp_path / "does" / "not" / "exist")
    with pytest.raises(ValueError, match="revision"):
        FSLoRAPersonSearch.from_pretrained(folder, revision="main")
    with pytest.raises(ValueError, match="got a file"):
        FSLoRAPersonSearch.from_pretrained(folder / "config.json")
