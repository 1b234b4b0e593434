"""Published checkpoints: ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (Hugging Face layout).

A checkpoint is a folder (or a Hub model repo) with
- ``config.json``: ``PersonSearchConfig.to_dict()`` with ``architecture`` and ``architecture_version``;
- ``model.safetensors``: the inference weights (no pickle, ever);
- ``README.md``: a model card (architecture, training data, metrics, parameter counts).

What is saved: every parameter and buffer of the model *except* the OIM lookup table and queue, and,
for a frozen backbone with pinned base weights (MobileNetV2's ImageNet file from an installed package),
except the backbone's base tensors: config.json names the base file and its sha256, the model rebuilds
W0 from the package (refusing a file with another sha256), and the checkpoint holds only what was
trained, as a PEFT adapter names its base model. Those
are training state tied to one training set's identities (``fslora.models.oim``); training checkpoints
keep them through ``model.state_dict()``, the published model does not need them, and a model built
for any ``oim.num_ids`` loads it. Loading is strict otherwise: a missing, unexpected or mis-shaped
tensor is a ``ValueError`` that names it.

Hub access goes through ``huggingface_hub.snapshot_download`` restricted to ``*.safetensors``, ``*.json``
and ``*.md``, so a pickle in a repo is never even downloaded. ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` are
read at call time (huggingface_hub itself reads them once, at import), so setting them in a running
process is honoured too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fslora.adapters import count_parameters
from fslora.backbones.registry import family_of
from fslora.models.config import ARCHITECTURE, ARCHITECTURE_VERSION, PersonSearchConfig
from fslora.models.oim import OIMLoss

if TYPE_CHECKING:
    from fslora.models.person_search import FSLoRAPersonSearch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
HUB_ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.md"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_TRUE = {"1", "true", "yes", "on"}


# -- state ------------------------------------------------------------------------------------------


def training_state_keys(model: nn.Module) -> set[str]:
    """State-dict keys of training-only buffers (the OIM lookup tables and queues)."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, OIMLoss):
            prefix = f"{name}." if name else ""
            keys.update(prefix + buffer for buffer, _ in module.named_buffers(recurse=False))
    return keys


def base_weight_keys(model: nn.Module) -> set[str]:
    """State-dict keys of a frozen backbone's base tensors that the model rebuilds from pinned weights."""
    config = getattr(model, "config", None)
    backbone = getattr(config, "backbone", None)
    if not getattr(config, "use_adapters", False) or not getattr(backbone, "pretrained", False):
        return set()
    return {k for k in model.state_dict() if k.startswith("backbone.") and ".adapters." not in k}


def inference_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The tensors a published checkpoint holds: the state dict minus the training state and the pinned
    base weights, on the CPU."""
    skip = training_state_keys(model) | base_weight_keys(model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in skip}


def load_inference_state_dict(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Strictly load ``state_dict`` (inference tensors) into ``model``; ValueError naming bad keys."""
    skip = training_state_keys(model) | base_weight_keys(model)
    expected = {k: v for k, v in model.state_dict().items() if k not in skip}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {_few(wrong)}")
    if problems:
        raise ValueError(f"{source} does not match the model built from its config: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=False)  # strictness checked above, minus the training state


# -- save -------------------------------------------------------------------------------------------


def save_pretrained(
    model: FSLoRAPersonSearch,
    directory: str | Path,
    *,
    metrics: dict[str, float] | None = None,
    training_data: str | None = None,
) -> Path:
    """Write config.json, model.safetensors and README.md into ``directory`` (created); returns it."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    metadata = {
        "format": "pt",
        "architecture": ARCHITECTURE,
        "architecture_version": str(ARCHITECTURE_VERSION),
    }
    save_file(inference_state_dict(model), str(folder / WEIGHTS_NAME), metadata=metadata)
    (folder / CARD_NAME).write_text(model_card(model, metrics=metrics, training_data=training_data))
    return folder


def model_card(
    model: FSLoRAPersonSearch, *, metrics: dict[str, float] | None = None, training_data: str | None = None
) -> str:
    """Markdown model card with Hub front matter: architecture, data, metrics, parameter counts."""
    cfg = model.config
    bb = cfg.backbone
    counts = count_parameters(model)
    adapters = cfg.adapters
    adapter_line = (
        f"FSLoRA dual streams (det / reid): r={adapters.r}, alpha={adapters.alpha:g}, "
        f"{adapters.n_experts} experts, SLM={'on' if adapters.slm else 'off'}, "
        f"FLM={'on (' + adapters.flm_position + ')' if adapters.flm else 'off'}, "
        f"cutoffs={list(adapters.cutoffs)} "
        f"({adapters.cutoff_mode}), targets={adapters.target_modules}; backbone frozen"
        if cfg.use_adapters
        else "none (NAE baseline: one stream, whole backbone fine-tuned)"
    )
    lines = [
        "---",
        "library_name: fslora",
        "license: apache-2.0",
        "pipeline_tag: object-detection",
        "tags: [person-search, re-identification, vmamba, lora, fslora]",
        "---",
        "",
        f"# {cfg.name}",
        "",
        "One-stage person search (detection + re-identification) with FSLoRA freq-spatial low-rank adapters "
        f'on a {family_of(bb)} backbone and an NAE-style head (CVPR 2026, "FSLoRA: Harmonizing Detection and '
        'Re-Identification via Freq-Spatial Low-Rank Adapter for One-Stage Person Search").',
        "",
        "## Architecture",
        "",
        f"- Backbone: {_backbone_line(bb)}; stages 0-2 as trunk (stride 16), stage 3 as box head",
        f"- Adapters: {adapter_line}",
        f"- Head: {cfg.head.upper()} - RPN (anchors {list(cfg.rpn.anchor_sizes)} "
        f"x {list(cfg.rpn.aspect_ratios)}), "
        f"RoIAlign {cfg.roi.output_size}x{cfg.roi.output_size}, {cfg.embedding_dim}-d embedding, OIM loss; "
        + ("person score = the embedding's norm (norm-aware)" if cfg.person_score == "norm"
           else "person score from a classifier on the det stream (person_score: det)"),
        f"- Input: shorter side {cfg.transform.min_size}, longer side <= {cfg.transform.max_size} "
        "(the model resizes)",
        f"- architecture_version: {cfg.architecture_version}",
        "",
        "## Parameters",
        "",
        "| total | trainable | adapter | adapter / rest |",
        "|---:|---:|---:|---:|",
        f"| {counts['total']:,} | {counts['trainable']:,} | {counts['adapter']:,} | "
        f"{100 * counts['adapter_fraction']:.2f} % |",
        "",
        "## Training data",
        "",
        training_data or "Not recorded.",
        "",
        "## Metrics",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
        ]
    else:
        lines.append("Not evaluated.")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from fslora.models import FSLoRAPersonSearch",
        'model = FSLoRAPersonSearch.from_pretrained("<this folder or repo id>")',
        "detections = model.detect([frame_rgb_uint8])  # boxes in input pixels, scores, unit-norm embeddings",
        "```",
        "",
    ]
    return "\n".join(lines)


# -- load -------------------------------------------------------------------------------------------


def resolve_checkpoint(
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
) -> Path:
    """A local checkpoint folder: the path itself, or the Hub snapshot of a repo id (cached)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} only applies to Hub repo ids, {path} is a local folder")
        return path
    if path.exists():
        raise ValueError(
            f"{path}: expected a checkpoint folder (config.json + model.safetensors), got a file"
        )
    repo_id = str(path_or_repo_id)
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") != 1:
        raise FileNotFoundError(f"{repo_id}: no such checkpoint folder (and not a Hub repo id 'org/name')")
    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    cache = cache_dir if cache_dir is not None else os.environ.get("HF_HUB_CACHE") or None
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            allow_patterns=HUB_ALLOW_PATTERNS,
            token=token,
        )
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"{repo_id}@{revision or 'main'}: not in the Hub cache ({cache or 'default cache'}) "
            f"and offline: {e}"
        ) from e
    except HfHubHTTPError as e:
        raise FileNotFoundError(
            f"{repo_id}@{revision or 'main'}: could not be fetched from the Hub: {e}"
        ) from e
    return Path(folder)


def read_config(folder: Path) -> PersonSearchConfig:
    """Parse and validate ``folder/config.json``."""
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (a checkpoint needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object of PersonSearchConfig fields")
    architecture = data.get("architecture")
    if architecture != ARCHITECTURE:
        raise ValueError(f"{file}: unknown architecture {architecture!r}, expected {ARCHITECTURE!r}")
    version = data.get("architecture_version")
    if version != ARCHITECTURE_VERSION:
        raise ValueError(
            f"{file}: architecture_version {version!r} is not supported by this code (expected "
            f"{ARCHITECTURE_VERSION}); use the fslora release that wrote it"
        )
    try:
        return PersonSearchConfig.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from e


def read_weights(folder: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """``folder/model.safetensors``; refuses pickles and names truncated / corrupt files."""
    file = folder / WEIGHTS_NAME
    if not file.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(
                f"{folder}: no {WEIGHTS_NAME}, only {pickles}; refusing to unpickle {pickles[0]} "
                "(pickle files can run arbitrary code). Convert it to safetensors with a script you trust."
            )
        raise FileNotFoundError(f"{file}: missing (a checkpoint needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        return load_file(str(file), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"{file}: cannot read the safetensors file, it is truncated or corrupt ({e})") from e


def load_pretrained(
    cls: type[FSLoRAPersonSearch],
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
) -> FSLoRAPersonSearch:
    """Build ``cls`` from a checkpoint's config and load its weights (eval mode, on ``device``).

    ``device=None`` picks CUDA when available, else the CPU.
    """
    folder = resolve_checkpoint(
        path_or_repo_id,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
    )
    config = read_config(folder)
    state_dict = read_weights(folder)
    model = cls(config)
    load_inference_state_dict(model, state_dict, str(folder / WEIGHTS_NAME))
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


# -- Hub --------------------------------------------------------------------------------------------


def push_to_hub(
    model: FSLoRAPersonSearch,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload FSLoRA person-search model",
    metrics: dict[str, float] | None = None,
    training_data: str | None = None,
) -> str:
    """Create the model repo if needed and upload the ``save_pretrained`` files; returns the commit URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, metrics=metrics, training_data=training_data)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            revision=revision,
            commit_message=commit_message,
            repo_type="model",
        )
    return str(getattr(info, "commit_url", info))


def _backbone_line(bb: Any) -> str:
    if family_of(bb) == "vmamba":
        return (
            f"VMamba v2, dims {list(bb.dims)}, depths {list(bb.depths)}, d_state {bb.d_state}, "
            f"ssm_ratio {bb.ssm_ratio:g}"
        )
    base = "random init"
    if bb.pretrained:
        base = f"ImageNet base weights `{bb.base_weights}` (sha256 {bb.base_sha256}), not stored here"
    return f"MobileNetV2 (batch norms folded), {base}, split_from_stage {bb.split_from_stage}"


def _few(items: list[Any], n: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"
