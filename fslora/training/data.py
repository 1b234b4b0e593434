"""From dataset records to model inputs: loading a split, identity remapping, images, batches, order.

- `load_dataset(name, root)` dispatches to the loaders of `fslora.data` (SynthPS can be generated).
- `IdentityMap`: OIM needs labelled identities as contiguous ids ``[0, num_ids)``; datasets number them
  any way (CUHK-SYSU from 1 with gaps, PRW by camera-wide ids). ``-1`` (unlabelled) stays ``-1``.
- `record_target` turns an `ImageRecord` into the model's target dict ``{"boxes", "pids"}``, optionally
  mirrored (horizontal-flip augmentation: boxes flipped with the image).
- `TrainImages` is the map-style dataset; `EpochOrder` the batch sampler. The order of an epoch and its
  flips are a function of ``(seed, epoch)`` only, so a run resumed in the middle of an epoch replays the
  same batches: the sampler skips the batches already done (without decoding their images).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Sampler

from fslora.data.records import UNLABELLED, ImageRecord, PersonSearchSplit
from fslora.training.config import DATASETS

logger = logging.getLogger(__name__)

Target = dict[str, np.ndarray]
"""``{"boxes": float32 (N, 4) xyxy pixels, "pids": int64 (N,)}`` - what ``model(images, targets)`` takes."""


# -- datasets ----------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    root: str | Path,
    *,
    gallery_size: int = 100,
    synthps_seed: int | None = None,
    synthps_preset: str = "standard",
) -> PersonSearchSplit:
    """Load a split by dataset name; a missing ``root`` is a ``FileNotFoundError`` naming it.

    For SynthPS with ``synthps_seed`` set, a ``root`` without ``annotations.json`` is generated first.
    """
    root = Path(root)
    if name == "synthps":
        from fslora.data import generate_split, load_synthps

        if synthps_seed is not None and not (root / "annotations.json").is_file():
            logger.info("generating SynthPS (%s, seed %d) into %s", synthps_preset, synthps_seed, root)
            return generate_split(root, synthps_seed, synthps_preset)
        _require_dir(root, name)
        return load_synthps(root)
    _require_dir(root, name)
    if name == "cuhk-sysu":
        from fslora.data import load_cuhk_sysu

        return load_cuhk_sysu(root, gallery_size=gallery_size)
    if name == "prw":
        from fslora.data import load_prw

        return load_prw(root)
    if name == "posetrack21":
        from fslora.data import load_posetrack21

        return load_posetrack21(root)
    if name == "real-footage":
        from fslora.data.real_footage import load_real_footage

        return load_real_footage(root)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _require_dir(root: Path, name: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{name} root {str(root)!r} does not exist (or is not a folder)")


# -- identities and targets --------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityMap:
    """Dataset pid -> contiguous OIM id in ``[0, num_ids)``, in increasing pid order."""

    pids: tuple[int, ...]
    _index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {pid: i for i, pid in enumerate(self.pids)})

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord]) -> IdentityMap:
        return cls(tuple(sorted({pid for rec in records for pid in rec.pids})))

    @property
    def num_ids(self) -> int:
        return len(self.pids)

    def __call__(self, pid: int) -> int:
        """The contiguous id of a labelled pid; ``-1`` stays ``-1``."""
        if pid == UNLABELLED:
            return UNLABELLED
        if pid not in self._index:
            raise ValueError(f"pid {pid} is not one of the {self.num_ids} training identities")
        return self._index[pid]


def record_target(record: ImageRecord, ids: IdentityMap, *, flip: bool = False) -> Target:
    """The model target of one record; with ``flip`` the boxes of the mirrored image."""
    boxes = np.array([p.box for p in record.persons], dtype=np.float32).reshape(-1, 4)
    if flip:
        boxes = boxes[:, [2, 1, 0, 3]].copy()
        boxes[:, [0, 2]] = record.width - boxes[:, [0, 2]]
    pids = np.array([ids(p.pid) for p in record.persons], dtype=np.int64)
    return {"boxes": boxes, "pids": pids}


def read_rgb(path: str | Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as a writable uint8 RGB array (H, W, 3); ``expected_size`` = (width, height)."""
    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the image ({e})") from e
    if expected_size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(expected_size):
        raise ValueError(
            f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]} but its record says "
            f"{expected_size[0]}x{expected_size[1]}"
        )
    return rgb


# -- dataset and sampler -----------------------------------------------------------------------------


@dataclass
class Sample:
    """One training image: pixels, target, and where it came from (for logs)."""

    image: np.ndarray
    target: Target
    index: int
    flipped: bool


class TrainImages(Dataset):
    """Training records as `Sample`s; keys are ``(index, flip)`` pairs from `EpochOrder` (or plain ints)."""

    def __init__(self, records: Sequence[ImageRecord], ids: IdentityMap) -> None:
        self.records = list(records)
        self.ids = ids

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, bool]) -> Sample:
        index, flip = key if isinstance(key, tuple) else (key, False)
        record = self.records[index]
        image = read_rgb(record.image_path, (record.width, record.height))
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
        return Sample(image, record_target(record, self.ids, flip=flip), index, flip)


def collate(samples: Sequence[Sample]) -> list[Sample]:
    """Images differ in size and the model batches them itself: a batch is just the list."""
    return list(samples)


def trainable_records(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Training images with at least one person (images without any teach the detector nothing here)."""
    kept = [r for r in records if r.persons]
    if len(kept) < len(records):
        logger.info("skipping %d training images without any person", len(records) - len(kept))
    if not kept:
        raise ValueError("the training split has no image with a person in it")
    return kept


def evenly_spaced(records: Sequence[ImageRecord], count: int | None) -> list[ImageRecord]:
    """``count`` records spread evenly over ``records`` (all of them when ``count`` is None or larger),
    so a subset still covers every camera and most identities of a split ordered by camera."""
    if count is None or count >= len(records):
        return list(records)
    picks = np.linspace(0, len(records) - 1, count).round().astype(int)
    return [records[i] for i in picks]


def epoch_order(num_samples: int, seed: int, epoch: int, hflip: float) -> tuple[np.ndarray, np.ndarray]:
    """The permutation of ``num_samples`` images for ``epoch`` and whether each one is flipped."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_samples)
    flips = rng.random(num_samples) < hflip
    return order, flips[order]


class EpochOrder(Sampler[list[tuple[int, bool]]]):
    """Batch sampler: shuffled ``(index, flip)`` batches of one epoch, a function of (seed, epoch).

    Call `set_epoch(epoch, skip_batches)` before iterating; ``skip_batches`` resumes mid-epoch.
    The last batch may be smaller (no image is dropped).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, hflip: float = 0.0) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError(
                f"EpochOrder needs num_samples, batch_size >= 1, got {num_samples}, {batch_size}"
            )
        self.num_samples, self.batch_size, self.seed, self.hflip = num_samples, batch_size, seed, hflip
        self.epoch, self.skip_batches = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if not 0 <= skip_batches <= self.batches_per_epoch:
            raise ValueError(f"skip_batches must be in [0, {self.batches_per_epoch}], got {skip_batches}")
        self.epoch, self.skip_batches = epoch, skip_batches

    def __len__(self) -> int:
        return self.batches_per_epoch - self.skip_batches

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        order, flips = epoch_order(self.num_samples, self.seed, self.epoch, self.hflip)
        for b in range(self.skip_batches, self.batches_per_epoch):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield [(int(i), bool(f)) for i, f in zip(order[sl], flips[sl], strict=True)]


def describe_split(split: PersonSearchSplit, root: str | Path) -> Mapping[str, Any]:
    """Counts of a split for logs and the model card."""
    return {
        "name": split.name,
        "root": str(root),
        "train_images": len(split.images),
        "train_identities": len(split.train_pids),
        "gallery_images": len(split.gallery),
        "queries": len(split.queries),
    }
