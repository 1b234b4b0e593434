"""First launch: which model the app opens with, and the demo videos it indexes for a new user.

Why here and not in the engine: these are choices of the interactive app only. The CLI refuses to run
without a real checkpoint; the UI must open on a fresh machine, so when no trained checkpoint is bundled
it falls back to a randomly initialised nano model (seeded, saved once into the data folder so that
its identity, and therefore its vector index, survives restarts) and labels it as such everywhere.
The demo is a SynthPS walking video rendered into the data folder (deterministic from its seed) plus
OpenCV's `vtest.avi` pedestrian video when the setup script has cached it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.engine import BUNDLED_CHECKPOINT as BUNDLED_MODEL

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
NANO_CONFIG = REPO_ROOT / "configs" / "models" / "nano.yaml"
RANDOM_MODEL_NAME = "random-init-nano-UNTRAINED"
RANDOM_MODEL_SEED = 0
DEMO_SEED = 7


@dataclass(frozen=True)
class ModelChoice:
    """Where the startup model comes from and whether it is the untrained fallback."""

    source: str  # a checkpoint folder or a Hub repo id
    revision: str | None = None
    untrained: bool = False

    @property
    def label(self) -> str:
        """Where the model comes from, as shown next to its name."""
        if self.untrained:
            return "randomly initialised, untrained: results are meaningless"
        return self.source + (f"@{self.revision}" if self.revision else "")


def is_checkpoint_dir(path: Path) -> bool:
    """A folder holding the two files `from_pretrained` needs."""
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def random_model_dir(data_dir: Path) -> Path:
    """The untrained nano checkpoint inside the data folder, created (seeded) on first use."""
    folder = Path(data_dir) / "models" / RANDOM_MODEL_NAME
    if is_checkpoint_dir(folder):
        return folder
    import torch  # noqa: PLC0415  (heavy; only on a first launch without a bundled model)

    from fslora.models import FSLoRAPersonSearch, PersonSearchConfig  # noqa: PLC0415

    config = PersonSearchConfig.from_yaml(NANO_CONFIG)
    config.name = RANDOM_MODEL_NAME
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_MODEL_SEED)
        model = FSLoRAPersonSearch(config).eval()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, training_data="None: randomly initialised (seed 0) so that the app runs "
                                             "before a trained checkpoint is bundled. Untrained.")
    os.replace(tmp, folder)  # a crash mid-save never leaves a half-written checkpoint behind
    log.warning("no trained checkpoint bundled: using an UNTRAINED random nano model saved in %s", folder)
    return folder


def choose_startup_model(model_arg: str | None, data_dir: Path, revision: str | None = None) -> ModelChoice:
    """The `--model` argument when given (folder or Hub id), else the bundled checkpoint when it exists,
    else the untrained fallback."""
    if model_arg:
        path = Path(model_arg).expanduser()
        if path.exists() or model_arg.count("/") == 1 and not model_arg.startswith((".", "/", "~")):
            return ModelChoice(str(path) if path.exists() else model_arg, revision)
        if path.resolve() != BUNDLED_MODEL.resolve():
            raise ValueError(f"--model {model_arg}: no such checkpoint folder, and not a Hub repo id "
                             "'org/name'")
    if is_checkpoint_dir(BUNDLED_MODEL):
        return ModelChoice(str(BUNDLED_MODEL))
    return ModelChoice(str(random_model_dir(data_dir)), untrained=True)


def test_video_path() -> Path:
    """Where the setup script caches OpenCV's vtest.avi (FSLORA_TEST_VIDEO overrides it)."""
    default = Path.home() / ".cache" / "fslora" / "vtest.avi"
    return Path(os.environ.get("FSLORA_TEST_VIDEO", default))


def prepare_demo_videos(data_dir: Path, *, duration_s: float = 8.0, fps: float = 10.0,
                        include_vtest: bool = True) -> list[Path]:
    """Demo videos inside `data_dir/demo`: a SynthPS walking video (rendered once, with its sidecar of
    true identities) and a copy of vtest.avi when cached. Copies, so the app serves only its own folder."""
    demo = Path(data_dir) / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    synth = demo / f"synthps-demo-seed{DEMO_SEED}.mp4"
    if not synth.is_file():
        from fslora.data.synthps import render_video  # noqa: PLC0415

        tmp = synth.with_name(".rendering-" + synth.name)
        sidecar = render_video(tmp, DEMO_SEED, duration_s=duration_s, fps=fps, write_sidecar=False)
        sidecar["video"] = synth.name
        synth.with_suffix(".json").write_text(json.dumps(sidecar))  # true identities, for evaluation
        os.replace(tmp, synth)  # rendered to a temporary name: a crash never leaves a half video
    videos = [synth]
    source = test_video_path()
    if include_vtest and source.is_file():
        copy = demo / "vtest.avi"
        if not copy.is_file() or copy.stat().st_size != source.stat().st_size:
            shutil.copyfile(source, copy)
        videos.append(copy)
    return videos
