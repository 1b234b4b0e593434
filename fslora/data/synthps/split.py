"""Writing a SynthPS split to disk and reading it back.

Layout of a split folder::

    annotations.json        the PersonSearchSplit (images = train, gallery = test, queries) + metadata
    README.md               what is in it and the evaluation protocol
    images/train/c{camera}_f{frame:05d}.jpg
    images/test/c{camera}_f{frame:05d}.jpg

Each person in ``annotations.json`` also carries its ``visibility`` (share of the body not hidden
by occluders, other people or the frame border); the records ignore it. People with less than
``MIN_VISIBILITY`` visible are left out (nothing to detect), queries need ``QUERY_MIN_VISIBILITY``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..records import PersonSearchSplit
from .compose import encode_jpeg, render_frame
from .plan import FramePlan, SplitPlan, plan_split
from .presets import SynthPSPreset
from .scenes import Camera

FORMAT = "synthps"
VERSION = 1
MIN_VISIBILITY = 0.1
QUERY_MIN_VISIBILITY = 0.5
JPEG_QUALITY = 95

_worker_cameras: list[Camera] = []
_worker_root = ""


def _init_worker(cameras: list[Camera], root: str) -> None:
    global _worker_cameras, _worker_root
    _worker_cameras, _worker_root = cameras, root


def _render_and_write(
    fp: FramePlan,
) -> list[tuple[int, int, tuple[float, float, float, float] | None, float]]:
    """Renders one planned frame, writes its JPEG; returns (item index, pid, box, visibility) per person."""
    rgb, people = render_frame(_worker_cameras[fp.camera], list(fp.items), fp.noise_offset)
    path = os.path.join(_worker_root, fp.image_path)
    with open(path, "wb") as f:
        f.write(encode_jpeg(rgb, JPEG_QUALITY))
    return [(p.index, p.pid, p.box, p.visibility) for p in people]


def _render_all(plan: SplitPlan, root: str, workers: int, progress: bool) -> list[list[tuple]]:
    frames = plan.train_frames + plan.test_frames
    for split in ("train", "test"):
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
    bar = dict(total=len(frames), desc=f"SynthPS {plan.preset.name}", unit="frame", disable=not progress)
    if workers <= 1:
        _init_worker(plan.cameras, root)
        return [_render_and_write(fp) for fp in tqdm(frames, **bar)]
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(plan.cameras, root)) as pool:
        return list(tqdm(pool.map(_render_and_write, frames, chunksize=8), **bar))


def _image_dict(fp: FramePlan, rendered: list[tuple], size: tuple[int, int]) -> dict[str, Any]:
    persons = [
        {"box": [round(v, 2) for v in box], "pid": pid, "visibility": round(vis, 3)}
        for _, pid, box, vis in rendered
        if box is not None and vis >= MIN_VISIBILITY
    ]
    h, w = size
    return {
        "image_path": fp.image_path,
        "width": w,
        "height": h,
        "camera": fp.camera,
        "frame": fp.frame,
        "persons": persons,
    }


def _readme(name: str, stats: dict[str, Any], preset: SynthPSPreset) -> str:
    tr, te = stats["train"], stats["test"]
    h, w = preset.image_size
    return f"""# {name}

A SynthPS split: procedurally rendered person-search data (fslora.data.synthps), regenerated
byte-for-byte by `python -m fslora.data.synthps --out DIR --seed {stats["seed"]} --split {preset.name}`.

| | train (`images`) | test (`gallery`) |
|---|---|---|
| frames ({w}x{h} JPEG q{JPEG_QUALITY}) | {tr["frames"]} | {te["frames"]} |
| identities (disjoint between splits) | {tr["identities"]} | {te["identities"]} |
| labelled person boxes | {tr["boxes"]} | {te["boxes"]} |
| unlabelled person boxes (pid -1) | {tr["unlabelled_boxes"]} | {te["unlabelled_boxes"]} |
| boxes less than 70 % visible | {tr["occluded_boxes"]} | {te["occluded_boxes"]} |
| distractor objects (not annotated) | {tr["distractors"]} | {te["distractors"]} |
| foreground occluders | {tr["occluders"]} | {te["occluders"]} |
| hard-negative identity pairs | {tr["hard_negative_pairs"]} | {te["hard_negative_pairs"]} |

Cameras: {stats["cameras"]}, each with its own background, perspective, light, colour cast and noise.
Queries: {stats["queries"]} boxes of {stats["query_identities"]} test identities; each of those identities
appears in at least two cameras.

## What makes it hard
- Clothing colours come from a small palette; identity is carried by textures (stripes of four periods
  and orientations, checks, dots) and accessories (hat, shoulder bag, backpack). Hard-negative pairs share
  body and colours and differ in one texture or one accessory (`identities[*].hard_negative_of`).
- Distractors (poles, boxes, plants, person-sized textured blobs) are never annotated; occluders (walls,
  railings, pillars, bins, cars) hide parts of people. Each person carries its `visibility`.

## Protocol (PRW style)
- Train on `images` (labelled pids are 0..{preset.train_ids - 1}, unlabelled people have pid -1).
- For each query, the gallery is every test frame except the query's own frame; rank gallery detections by
  similarity and compute mAP and top-k. Multi-view variant: also exclude frames of the query's camera.
- Boxes are x1, y1, x2, y2 in pixels, tight around the painted person (full body, clipped to the frame).
"""


def generate_split(
    out_dir: str | os.PathLike,
    seed: int,
    preset: str | SynthPSPreset = "standard",
    *,
    workers: int = 1,
    progress: bool = True,
) -> PersonSearchSplit:
    """Plans, renders and writes a split to ``out_dir``; returns it as ``load_synthps`` would read it."""
    root = str(out_dir)
    plan = plan_split(seed, preset)
    rendered = _render_all(plan, root, workers, progress)
    n_train = len(plan.train_frames)
    size = plan.preset.image_size
    train = [_image_dict(fp, r, size) for fp, r in zip(plan.train_frames, rendered[:n_train], strict=True)]
    test = [_image_dict(fp, r, size) for fp, r in zip(plan.test_frames, rendered[n_train:], strict=True)]

    queries = []
    for q in plan.queries:
        fp = plan.test_frames[q.frame_index]
        hit = [r for r in rendered[n_train + q.frame_index] if r[0] == q.item_index]
        if hit and hit[0][2] is not None and hit[0][3] >= QUERY_MIN_VISIBILITY:
            queries.append(
                {
                    "image_path": fp.image_path,
                    "box": [round(v, 2) for v in hit[0][2]],
                    "pid": q.pid,
                    "camera": fp.camera,
                    "frame": fp.frame,
                }
            )

    stats = plan.stats()
    for split, images in (("train", train), ("test", test)):
        persons = [p for im in images for p in im["persons"]]
        stats[split].update(
            boxes=sum(p["pid"] >= 0 for p in persons),
            unlabelled_boxes=sum(p["pid"] < 0 for p in persons),
            occluded_boxes=sum(p["visibility"] < 0.7 for p in persons),
        )
    stats["queries"] = len(queries)
    stats["query_identities"] = len({q["pid"] for q in queries})
    name = f"synthps-{plan.preset.name}-seed{seed}"
    test_pids = {i.pid for i in plan.identities[plan.preset.train_ids :]}
    annotations = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "images": train,
        "queries": queries,
        "gallery": test,
        "query_gallery": None,
        "meta": {"seed": seed, "preset": plan.preset.to_dict(), "stats": stats},
        "cameras": [c.to_dict() for c in plan.cameras],
        "identities": [
            dict(i.to_dict(), split="test" if i.pid in test_pids else "train") for i in plan.identities
        ],
    }
    Path(root, "annotations.json").write_text(json.dumps(annotations, indent=1))
    Path(root, "README.md").write_text(_readme(name, stats, plan.preset))
    return load_synthps(root)


def load_synthps(root: str | os.PathLike) -> PersonSearchSplit:
    """Reads a SynthPS folder's ``annotations.json`` back into records (image paths joined to ``root``)."""
    path = Path(root, "annotations.json")
    if not path.is_file():
        raise ValueError(
            f"{path}: no SynthPS annotations here (run python -m fslora.data.synthps --out {root})"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: field 'format' is {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: field 'version' is {data.get('version')!r}, this reader knows {VERSION}")
    return PersonSearchSplit.from_dict(data, root=str(root))
