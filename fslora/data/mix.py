"""Mix the training images of several person-search splits into one, with disjoint identities and cameras.

The default model learns from drawn people (SynthPS, whose identities are exact) and real footage
(COCO photos and pseudo-labelled video, whose identities are tracklets) at once. Each part's labelled
pids are shifted past the previous parts' (so OIM never merges two datasets' people), cameras likewise;
unlabelled people stay -1. Only training images are mixed: evaluation keeps each dataset's own protocol.

    python -m fslora.data.mix --part synthps:data/synthps-standard:400 --part real-footage:data/realps \
        --out data/mixed

writes ``data/mixed/annotations.json`` (the `PersonSearchSplit` JSON that the ``real-footage`` dataset
kind reads) with absolute image paths, and ``data/mixed/SOURCES.md`` listing each part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fslora.data.records import UNLABELLED, ImageRecord, PersonBox, PersonSearchSplit


@dataclass(frozen=True)
class MixPart:
    """One split's training images, optionally cut to ``count`` images spread evenly over the list."""

    name: str
    split: PersonSearchSplit
    count: int | None = None


def merge_training_images(parts: Sequence[MixPart], name: str = "mixed") -> PersonSearchSplit:
    """One split whose ``images`` are every part's (first-to-last), pids and cameras made disjoint."""
    if not parts:
        raise ValueError("merge_training_images needs at least one part")
    images: list[ImageRecord] = []
    pid_offset = camera_offset = 0
    meta = []
    for part in parts:
        chosen = _evenly(part.split.images, part.count)
        pids = sorted({pid for rec in chosen for pid in rec.pids})
        remap = {pid: pid_offset + i for i, pid in enumerate(pids)}
        cameras = sorted({rec.camera for rec in chosen})
        cam_map = {cam: camera_offset + i for i, cam in enumerate(cameras)}
        for rec in chosen:
            persons = tuple(
                PersonBox(p.box, UNLABELLED if p.pid == UNLABELLED else remap[p.pid]) for p in rec.persons
            )
            path = os.path.abspath(rec.image_path)
            camera = cam_map[rec.camera]
            images.append(dataclasses.replace(rec, image_path=path, camera=camera, persons=persons))
        meta.append(
            {
                "part": part.name,
                "source": part.split.name,
                "images": len(chosen),
                "identities": len(pids),
                "persons": sum(len(r.persons) for r in chosen),
                "pid_range": [pid_offset, pid_offset + len(pids)],
            }
        )
        pid_offset += len(pids)
        camera_offset += len(cameras)
    return PersonSearchSplit(name=name, images=images, queries=[], gallery=[], meta={"parts": meta})


def _evenly(records: Sequence[ImageRecord], count: int | None) -> list[ImageRecord]:
    if count is None or count >= len(records):
        return list(records)
    if count <= 0:
        raise ValueError(f"a part's image count must be positive, got {count}")
    step = len(records) / count
    return [records[int(i * step)] for i in range(count)]


def parse_part(text: str) -> tuple[str, Path, int | None]:
    """``DATASET:ROOT[:COUNT]`` (dataset kinds of `fslora.training.data.load_dataset`)."""
    pieces = text.split(":")
    if len(pieces) not in (2, 3) or not pieces[0] or not pieces[1]:
        raise argparse.ArgumentTypeError(f"--part must be DATASET:ROOT[:COUNT], got {text!r}")
    try:
        count = int(pieces[2]) if len(pieces) == 3 else None
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--part {text!r}: COUNT must be an integer") from e
    return pieces[0], Path(pieces[1]), count


def main(argv: Sequence[str] | None = None) -> int:
    from fslora.training.data import load_dataset

    parser = argparse.ArgumentParser(prog="python -m fslora.data.mix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", type=parse_part, required=True,
                        help="DATASET:ROOT[:COUNT], repeatable (e.g. synthps:data/synthps-standard:400)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (annotations.json)")
    args = parser.parse_args(argv)
    parts = [MixPart(f"{kind}:{root}", load_dataset(kind, root), count) for kind, root, count in args.part]
    merged = merge_training_images(parts, name=args.out.name)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "annotations.json.tmp"
    tmp.write_text(json.dumps(merged.to_dict()))
    tmp.replace(args.out / "annotations.json")
    lines = ["# Sources of this mixed training split", ""]
    for part, info in zip(args.part, merged.meta["parts"], strict=True):
        kind, root, _ = part
        lines.append(f"- `{kind}` from `{root}`: {info['images']} images, {info['persons']} people, "
                     f"{info['identities']} identities (see that folder's own sources and licences)")
    (args.out / "SOURCES.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(merged.meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
